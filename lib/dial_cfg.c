/* SPDX-License-Identifier: MIT */
/* What tether_conn_dial() builds before it connects: the parsed URL and
 * the connection configuration, and the loop's memory of the last ones.
 *
 * An application that dials the same URL with the same options again (a
 * client opening connections to its server, the blocking API, a pool)
 * would otherwise parse the URL, copy and validate the options and build
 * a configuration on every dial. A loop remembers its last dial's URL,
 * options and configuration; a dial that matches them shares the
 * configuration (one reference more: it is immutable) and the parsed URL.
 * The lookup, tether__dial_mem_find(), is inline in dial.h.
 *
 * A match is exact: the same URL string and the same option bytes, but for
 * userdata, which the connection takes from the caller's options itself.
 * Options that point at data the configuration copies (line_delim,
 * proxy_source) could change behind an unchanged pointer, so they are
 * never remembered; nor are TLS and WebSocket URLs, whose configurations
 * hold more than the options say. Every other dial behaves as before,
 * errors included: a remembered dial was validated with identical input. */
#include "conn.h"
#include "dial.h"
#include "tls.h"
#include "ws.h"

#include <stdlib.h>
#include <string.h>

static const char dial_key; /* its address identifies the loop's memory */

static void dial_mem_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    struct tether__dial_mem *m = tether__container_of(ext, struct tether__dial_mem, ext);
    loop->dial_mem = NULL;
    tether__conn_cfg_unref(m->cfg);
    free(m);
}

/* Builds the configuration for a parsed URL, as every dial did. */
static int dial_cfg_build(struct tether__conn_cfg **out, const char *url,
                          const struct tether__url *u, const tether_conn_opts *opts,
                          tether_error *err)
{
    struct tether__conn_cfg *cfg;
    int rv = tether__conn_cfg_new(&cfg, opts, err);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (u->scheme == TETHER__SCHEME_TLS) {
        rv = tether__conn_cfg_set_tls(cfg, false, err);
    }
    if (rv == TETHER_OK && u->ws) {
        rv = tether__ws_cfg_set(cfg, u, err);
    }
    if (rv == TETHER_OK) {
        cfg->dial_url = strdup(url);
        if (cfg->dial_url == NULL) {
            rv = tether__set_error(err, TETHER_ENOMEM, "out of memory");
        }
    }
    if (rv != TETHER_OK) {
        tether__conn_cfg_unref(cfg);
        return rv;
    }
    *out = cfg;
    return TETHER_OK;
}

int tether__dial_cfg(tether_loop *loop, const char *url, const tether_conn_opts *opts,
                     struct tether__conn_cfg **out_cfg, const struct tether__url **out_u,
                     struct tether__url *storage, tether_error *err)
{
    struct tether__dial_mem *m = loop->dial_mem;
    int rv = tether__url_parse(url, false, storage, err);
    if (rv != TETHER_OK) {
        return rv;
    }
    struct tether__conn_cfg *cfg = NULL;
    rv = dial_cfg_build(&cfg, url, storage, opts, err);
    if (rv != TETHER_OK) {
        return rv;
    }
    *out_cfg = cfg;
    *out_u = storage;
    bool keep = storage->scheme != TETHER__SCHEME_TLS && !storage->ws &&
                (opts == NULL ||
                 (opts->size <= sizeof m->key &&
                  opts->size >= offsetof(tether_conn_opts, userdata) + sizeof opts->userdata &&
                  opts->line_delim == NULL && opts->proxy_source == NULL));
    if (!keep) {
        return TETHER_OK;
    }
    if (m == NULL) {
        m = calloc(1, sizeof *m);
        if (m == NULL) {
            return TETHER_OK; /* nothing remembered; this dial goes on */
        }
        m->ext.key = &dial_key;
        m->ext.cleanup = dial_mem_cleanup;
        tether__loop_ext_add(loop, &m->ext);
        loop->dial_mem = m;
    }
    tether__conn_cfg_unref(m->cfg);
    cfg->refs++;
    m->cfg = cfg;
    m->defaults = opts == NULL;
    if (opts != NULL) {
        memcpy(&m->key, opts, opts->size);
    }
    m->u = *storage;
    m->express = tether__dial_express_ok(cfg, storage);
    return TETHER_OK;
}
