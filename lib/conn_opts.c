/* SPDX-License-Identifier: MIT */
/* Connection options: their defaults (tether_conn_opts_init), their
 * validation, the shared configuration built from them (struct
 * tether__conn_cfg, reference-counted, immutable once built), and the
 * socket options they ask for. Nothing here runs per message. */
#include "conn_core.h"
#include "tls.h"
#include "ws.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

void tether_conn_opts_init_sized(tether_conn_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_conn_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    d.framing = TETHER_FRAMING_LEN32;
    d.max_msg = 16u * 1024u * 1024u;
    d.send_hwm = 1024u * 1024u;
    d.send_lwm = 0; /* 0 = a quarter of send_hwm, resolved at creation */
    d.nodelay = true;
    d.connect_timeout_ms = 20000;
    d.close_timeout_ms = 10000;
    d.attempt_delay_ms = 250;
    d.family = TETHER_FAMILY_ANY;
    d.heartbeat_misses = 3;
    /* Resolved per role when the connection or listener is created (see
     * cfg_resolve_role()). */
    d.keepalive_idle_ms = TETHER_ROLE_DEFAULT;
    d.user_timeout_ms = TETHER_ROLE_DEFAULT;
    d.frame_timeout_ms = TETHER_ROLE_DEFAULT;
    d.frame_min_rate = TETHER_ROLE_DEFAULT;
    d.write_timeout_ms = TETHER_ROLE_DEFAULT;
    d.write_min_rate = TETHER_ROLE_DEFAULT;
    tether__sized_fill(opts, size, &d, sizeof d);
}

/* The fields that take TETHER_ROLE_DEFAULT, and what it means for an
 * accepted connection (a dialled one turns every one of them off). The
 * values are documented in tether/conn.h ("Slow and stuck peers"). */
static const struct {
    size_t off;
    int server;
} role_defaults[] = {
    {offsetof(tether_conn_opts, keepalive_idle_ms), TETHER__SRV_KEEPALIVE_IDLE_MS},
    {offsetof(tether_conn_opts, user_timeout_ms), TETHER__SRV_USER_TIMEOUT_MS},
    {offsetof(tether_conn_opts, frame_timeout_ms), TETHER__SRV_FRAME_TIMEOUT_MS},
    {offsetof(tether_conn_opts, frame_min_rate), TETHER__SRV_FRAME_MIN_RATE},
    {offsetof(tether_conn_opts, write_timeout_ms), TETHER__SRV_WRITE_TIMEOUT_MS},
    {offsetof(tether_conn_opts, write_min_rate), TETHER__SRV_WRITE_MIN_RATE},
};

static int opt_get(const tether_conn_opts *o, size_t off)
{
    int v;
    memcpy(&v, (const char *)o + off, sizeof v);
    return v;
}

static void opt_set(tether_conn_opts *o, size_t off, int v)
{
    memcpy((char *)o + off, &v, sizeof v);
}

/* Replaces TETHER_ROLE_DEFAULT by the value for the role. An accepted TCP
 * connection whose keepalive_idle_ms is left at the default gets keepalive
 * with the server probes (interval and count, where left at 0, too), so
 * that a peer that vanished is noticed while it is idle. */
static void cfg_resolve_role(tether_conn_opts *o, bool server)
{
    if (server && o->keepalive_idle_ms == TETHER_ROLE_DEFAULT) {
        o->keepalive = true;
        if (o->keepalive_interval_ms == 0) {
            o->keepalive_interval_ms = TETHER__SRV_KEEPALIVE_INTERVAL_MS;
        }
        if (o->keepalive_count == 0) {
            o->keepalive_count = TETHER__SRV_KEEPALIVE_COUNT;
        }
    }
    for (size_t i = 0; i < TETHER__ARRAY_SIZE(role_defaults); i++) {
        if (opt_get(o, role_defaults[i].off) == TETHER_ROLE_DEFAULT) {
            opt_set(o, role_defaults[i].off, server ? role_defaults[i].server : 0);
        }
    }
}

/* The liveness options: all are off at 0, none may be negative (after
 * cfg_resolve_role()), heartbeats need the framing that has room for
 * control frames, and a read-idle timeout must leave a heartbeating peer
 * time to be heard. */
static int cfg_check_liveness(const tether_conn_opts *o, tether_error *err)
{
    static const struct {
        size_t off;
        const char *name;
        int max;
    } fields[] = {
        {offsetof(tether_conn_opts, keepalive_idle_ms), "keepalive_idle_ms", 32767000},
        {offsetof(tether_conn_opts, keepalive_interval_ms), "keepalive_interval_ms", 32767000},
        {offsetof(tether_conn_opts, keepalive_count), "keepalive_count", 127},
        {offsetof(tether_conn_opts, user_timeout_ms), "user_timeout_ms", INT32_MAX},
        {offsetof(tether_conn_opts, heartbeat_ms), "heartbeat_ms", INT32_MAX},
        {offsetof(tether_conn_opts, idle_timeout_ms), "idle_timeout_ms", INT32_MAX},
        {offsetof(tether_conn_opts, frame_timeout_ms), "frame_timeout_ms", INT32_MAX},
        {offsetof(tether_conn_opts, frame_min_rate), "frame_min_rate", INT32_MAX},
        {offsetof(tether_conn_opts, write_timeout_ms), "write_timeout_ms", INT32_MAX},
        {offsetof(tether_conn_opts, write_min_rate), "write_min_rate", INT32_MAX},
        {offsetof(tether_conn_opts, max_age_ms), "max_age_ms", INT32_MAX},
    };
    for (size_t i = 0; i < TETHER__ARRAY_SIZE(fields); i++) {
        int v = opt_get(o, fields[i].off);
        if (v < 0 || v > fields[i].max) {
            return tether__set_error(err, TETHER_EINVAL,
                                     "%s must be between 0 and %d, or TETHER_ROLE_DEFAULT",
                                     fields[i].name, fields[i].max);
        }
    }
    if (o->heartbeat_misses < 1 || o->heartbeat_misses > 1000) {
        return tether__set_error(err, TETHER_EINVAL, "heartbeat_misses must be between 1 and 1000");
    }
    if (o->calls && o->framing != TETHER_FRAMING_LEN32) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "calls need the len32 framing (their ids travel in control "
                                 "frames)");
    }
    if (o->heartbeat_ms > 0 && o->framing != TETHER_FRAMING_LEN32) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "heartbeats need the len32 framing (it reserves room for control "
                                 "frames)");
    }
    if (o->heartbeat_ms > 0 && o->idle_timeout_ms > 0 &&
        (int64_t)o->idle_timeout_ms < 2 * (int64_t)o->heartbeat_ms) {
        /* A heartbeating peer is only heard after one interval of silence
         * (and its ping still has to arrive): a shorter idle timeout would
         * close every healthy heartbeating connection. */
        return tether__set_error(err, TETHER_EINVAL,
                                 "idle_timeout_ms (%d) must be at least twice heartbeat_ms (%d): "
                                 "a heartbeating peer is only heard after one interval of silence",
                                 o->idle_timeout_ms, o->heartbeat_ms);
    }
    if ((o->frame_min_rate > 0 && o->frame_timeout_ms == 0) ||
        (o->write_min_rate > 0 && o->write_timeout_ms == 0)) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "%s (%d bytes/s) needs %s, the window it is measured over",
                                 o->frame_min_rate > 0 ? "frame_min_rate" : "write_min_rate",
                                 o->frame_min_rate > 0 ? o->frame_min_rate : o->write_min_rate,
                                 o->frame_min_rate > 0 ? "frame_timeout_ms" : "write_timeout_ms");
    }
    return TETHER_OK;
}

int tether__conn_cfg_new_role(struct tether__conn_cfg **out, const tether_conn_opts *opts,
                              bool server, tether_error *err)
{
    *out = NULL;
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "options not initialised with tether_conn_opts_init()");
    }
    struct tether__conn_cfg *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    cfg->refs = 1;
    tether_conn_opts_init(&cfg->o);
    if (opts != NULL) {
        tether__opts_merge(&cfg->o, sizeof cfg->o, opts);
        cfg->o.size = sizeof cfg->o;
    }
    tether_conn_opts *o = &cfg->o;
    cfg_resolve_role(o, server);
    int rv = TETHER_OK;
    if (o->max_msg == 0 || o->max_msg > TETHER__MAX_MSG_LIMIT) {
        rv = tether__set_error(err, TETHER_EINVAL, "max_msg must be between 1 and %zu bytes",
                               (size_t)TETHER__MAX_MSG_LIMIT);
    } else if (o->send_hwm == 0) {
        rv = tether__set_error(err, TETHER_EINVAL, "send_hwm must be positive");
    } else if (o->send_lwm > o->send_hwm) {
        rv = tether__set_error(err, TETHER_EINVAL, "send_lwm (%zu) is above send_hwm (%zu)",
                               o->send_lwm, o->send_hwm);
    } else if (o->sndbuf < 0 || o->rcvbuf < 0) {
        rv = tether__set_error(err, TETHER_EINVAL, "sndbuf and rcvbuf must not be negative");
    } else if (o->family != TETHER_FAMILY_ANY && o->family != TETHER_FAMILY_V4 &&
               o->family != TETHER_FAMILY_V6) {
        rv = tether__set_error(err, TETHER_EINVAL, "unknown address family %d", (int)o->family);
    } else {
        rv = cfg_check_liveness(o, err);
    }
    if (rv == TETHER_OK && o->send_lwm == 0) {
        o->send_lwm = o->send_hwm / 4;
    }
    if (rv == TETHER_OK) {
        switch (o->framing) {
        case TETHER_FRAMING_LEN32:
            cfg->framer = tether_framer_len32();
            cfg->fast_len32 = true;
            break;
        case TETHER_FRAMING_VARINT:
            cfg->framer = tether_framer_varint();
            break;
        case TETHER_FRAMING_LINE: {
            const char *d = o->line_delim != NULL ? o->line_delim : "\n";
            if (tether__line_framer_init(&cfg->line, (const uint8_t *)d, strlen(d)) != 0) {
                rv = tether__set_error(err, TETHER_EINVAL, "line_delim must be 1 to 8 bytes long");
            }
            cfg->framer = &cfg->line.base;
            break;
        }
        case TETHER_FRAMING_CUSTOM:
            if (o->framer == NULL || o->framer->decode == NULL || o->framer->encode == NULL) {
                rv = tether__set_error(err, TETHER_EINVAL,
                                       "TETHER_FRAMING_CUSTOM needs a framer with decode and "
                                       "encode");
            }
            cfg->framer = o->framer;
            break;
        default:
            rv = tether__set_error(err, TETHER_EINVAL, "unknown framing %d", (int)o->framing);
            break;
        }
    }
    /* PROXY protocol (conn_proxy.c): validates and copies proxy_source. */
    if (rv == TETHER_OK) {
        rv = tether__pp_cfg_init(cfg, err);
    } else {
        o->proxy_source = NULL;
    }
    o->line_delim = NULL; /* the caller's string is not kept */
    if (rv != TETHER_OK) {
        free(cfg);
        return rv;
    }
    cfg->live = o->heartbeat_ms > 0 || o->idle_timeout_ms > 0 || o->frame_timeout_ms > 0 ||
                o->write_timeout_ms > 0 || o->max_age_ms > 0;
    /* Only the frame and write timeouts: nothing to watch while nothing is
     * pending, so liveness.c allocates c->ex->live on demand. */
    cfg->live_lazy =
        cfg->live && o->heartbeat_ms == 0 && o->idle_timeout_ms == 0 && o->max_age_ms == 0;
    *out = cfg;
    return TETHER_OK;
}

int tether__conn_cfg_new(struct tether__conn_cfg **out, const tether_conn_opts *opts,
                         tether_error *err)
{
    return tether__conn_cfg_new_role(out, opts, false, err);
}

void tether__conn_cfg_free(struct tether__conn_cfg *cfg)
{
    tether_tls_config_unref(cfg->tls);
    tether__ws_cfg_free(cfg->ws);
    free(cfg->dial_url);
    free(cfg);
}
/* (A new option here needs tether__sock_opts_just_nodelay() in conn.h.) */
void tether__sock_apply_opts(int fd, const struct tether__conn_cfg *cfg, bool is_unix)
{
    int one = 1;
    if (!is_unix && cfg->o.nodelay) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (cfg->o.sndbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg->o.sndbuf, sizeof cfg->o.sndbuf);
    }
    if (cfg->o.rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg->o.rcvbuf, sizeof cfg->o.rcvbuf);
    }
    if (!is_unix) {
        const tether_conn_opts *o = &cfg->o;
        if (o->keepalive) {
            tether__tcp_set_keepalive(fd, o->keepalive_idle_ms, o->keepalive_interval_ms,
                                      o->keepalive_count);
        }
        if (o->user_timeout_ms > 0) {
            tether__tcp_set_user_timeout(fd, o->user_timeout_ms);
        }
    }
}

static bool sock_opt_is(int fd, int level, int name, int want)
{
    int v = 0;
    socklen_t l = sizeof v;
    return getsockopt(fd, level, name, &v, &l) == 0 && (want != 0 ? v == want : v != 0);
}

bool tether__sock_opts_inherited(int fd, const struct tether__conn_cfg *cfg, bool is_unix)
{
    const tether_conn_opts *o = &cfg->o;
    if (o->sndbuf > 0 || o->rcvbuf > 0) {
        return false; /* sizes read back doubled; set them on each socket */
    }
    if (is_unix) {
        return true; /* nothing else applies */
    }
    if (o->nodelay && !sock_opt_is(fd, IPPROTO_TCP, TCP_NODELAY, 0)) {
        return false;
    }
    if (o->keepalive &&
        (!sock_opt_is(fd, SOL_SOCKET, SO_KEEPALIVE, 0) ||
         (o->keepalive_idle_ms > 0 &&
          !sock_opt_is(fd, IPPROTO_TCP, TCP_KEEPIDLE, (o->keepalive_idle_ms + 999) / 1000)) ||
         (o->keepalive_interval_ms > 0 &&
          !sock_opt_is(fd, IPPROTO_TCP, TCP_KEEPINTVL, (o->keepalive_interval_ms + 999) / 1000)) ||
         (o->keepalive_count > 0 &&
          !sock_opt_is(fd, IPPROTO_TCP, TCP_KEEPCNT, o->keepalive_count)))) {
        return false;
    }
    return o->user_timeout_ms <= 0 ||
           sock_opt_is(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, o->user_timeout_ms);
}

int tether__conn_cfg_set_tls(struct tether__conn_cfg *cfg, bool server, tether_error *err)
{
    tether_tls_config *t = NULL;
    int rv = tether__tls_config_select(&t, cfg->o.tls, server, err);
    if (rv == TETHER_OK) {
        cfg->tls = t;
        /* (A server's TLS transport needs less room: no session cache key.) */
        cfg->tls_tail =
            (uint8_t)((server ? TETHER__TLS_SERVER_TRANSPORT_SIZE : TETHER__TLS_TRANSPORT_SIZE) -
                      sizeof(struct tether_transport));
    }
    return rv;
}
