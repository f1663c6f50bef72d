/* SPDX-License-Identifier: MIT */
/* tether_conn_dial(): a client connection from a URL and options. The
 * configuration comes from the loop's memory of its last dials when the
 * URL and options are the same (dial_cfg.c), else it is made here; the
 * connection block (conn_mem.c), the first control frame where the
 * options ask for one (ctrl.c), then the dial itself: straight to the
 * socket for a numeric address (dial_direct.c), else through the resolver
 * (connect.c). A remembered dial to a loopback address with the default
 * socket options (a client opening connection after connection to its
 * server, the hs benchmark) goes the shortest way, tether__dial_express(),
 * without the tests the general one makes on every dial. Every failure
 * after the block exists is reported from the loop, as conn.c's contract
 * says. */
#include "ack.h"
#include "conn_core.h"
#include "dial.h"

/* The dial of c, made for cfg: the HELLO where the options ask for one,
 * then the connect. */
static int dial_go(tether_conn *c, const struct tether__url *u, const char *url, tether_conn **out,
                   tether_error *out_err)
{
    const struct tether__conn_cfg *cfg = c->cfg;
    if (tether__ack_dial_take(c) != TETHER_OK ||
        ((cfg->o.heartbeat_ms > 0 || cfg->o.calls || tether__conn_ack(c) != NULL) &&
         tether__ctrl_queue_hello(c) != TETHER_OK)) {
        c->state = TETHER__CS_DEAD;
        tether__conn_free(c);
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    int rv = tether__dial_start(c, u); /* (arms the connect deadline) */
    if (rv != TETHER_OK && c->state != TETHER__CS_DEAD) {
        /* Found synchronously, delivered from the loop (callback contract). */
        tether__conn_fail(c, rv, "connect to %s: %s", url, tether_strerror(rv));
    }
    *out = c;
    return TETHER_OK;
}

/* A dial the loop does not remember, or one that needs more than
 * tether__dial_express(): out of line, with the room to parse a URL. */
__attribute__((noinline)) static int dial_slow(tether_conn **out, tether_loop *loop,
                                               const char *url, const tether_conn_opts *opts,
                                               const struct tether__dial_mem *m,
                                               tether_error *out_err)
{
    struct tether__url storage;
    const struct tether__url *u;
    struct tether__conn_cfg *cfg;
    struct tether__conn_cfg *made = NULL; /* a new configuration: ours to release */
    if (m != NULL) {
        cfg = m->cfg;
        u = &m->u;
    } else {
        int rv = tether__dial_cfg(loop, url, opts, &made, &u, &storage, out_err);
        if (rv != TETHER_OK) {
            return rv;
        }
        cfg = made;
    }
    tether_conn *c = tether__conn_alloc(loop, cfg, TETHER__CS_CONNECTING);
    if (made != NULL) {
        tether__conn_cfg_unref(made);
    }
    if (c == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    c->flags |= TETHER__CF_DIALED;
    c->userdata = opts != NULL ? opts->userdata : NULL; /* (a shared cfg has another's) */
    return dial_go(c, u, url, out, out_err);
}

int tether_conn_dial(tether_conn **out, tether_loop *loop, const char *url,
                     const tether_conn_opts *opts, tether_error *out_err)
{
    if (out_err != NULL) { /* (tether__error_clear(), inline) */
        out_err->code = TETHER_OK;
        out_err->message[0] = '\0';
    }
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (loop == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "loop is NULL");
    }
    const struct tether__dial_mem *m = tether__dial_mem_find(loop, url, opts);
    if (TETHER__UNLIKELY(m == NULL || !m->express)) {
        return dial_slow(out, loop, url, opts, m, out_err);
    }
    /* A remembered dial to a loopback address (most dials of a client
     * that opens connection after connection to its server). */
    tether_conn *c = tether__conn_alloc(loop, m->cfg, TETHER__CS_CONNECTING);
    if (c == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    c->flags |= TETHER__CF_DIALED;
    c->userdata = opts != NULL ? opts->userdata : NULL; /* (a shared cfg has another's) */
    if (TETHER__UNLIKELY(tether__ack_dial_wanted())) {
        return dial_go(c, &m->u, url, out, out_err); /* (a HELLO first) */
    }
    tether__dial_express(c, &m->u);
    *out = c;
    return TETHER_OK;
}
