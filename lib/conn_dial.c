/* SPDX-License-Identifier: MIT */
/* tether_conn_dial(): a client connection from a URL and options. The
 * configuration comes from the loop's memory of its last dials when the
 * URL and options are the same (dial_cfg.c), else it is made here; the
 * connection block (conn_mem.c), the first control frame where the
 * options ask for one (ctrl.c), then the dial itself: straight to the
 * socket for a numeric address (dial_direct.c), else through the resolver
 * (connect.c). Every failure after the block exists is reported from the
 * loop, as conn.c's contract says. */
#include "ack.h"
#include "conn_core.h"
#include "dial.h"

int tether_conn_dial(tether_conn **out, tether_loop *loop, const char *url,
                     const tether_conn_opts *opts, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (loop == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "loop is NULL");
    }
    struct tether__url storage;
    const struct tether__url *u;
    struct tether__conn_cfg *cfg;
    struct tether__conn_cfg *made = NULL; /* a new configuration: ours to release */
    int rv;
    const struct tether__dial_mem *m = tether__dial_mem_find(loop, url, opts);
    if (TETHER__LIKELY(m != NULL)) {
        cfg = m->cfg;
        u = &m->u;
    } else {
        rv = tether__dial_cfg(loop, url, opts, &made, &u, &storage, out_err);
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
    if (tether__ack_dial_take(c) != TETHER_OK ||
        ((cfg->o.heartbeat_ms > 0 || cfg->o.calls || tether__conn_ack(c) != NULL) &&
         tether__ctrl_queue_hello(c) != TETHER_OK)) {
        c->state = TETHER__CS_DEAD;
        tether__conn_free(c);
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    rv = tether__dial_start(c, u); /* (arms the connect deadline) */
    if (rv != TETHER_OK && c->state != TETHER__CS_DEAD) {
        /* Found synchronously, delivered from the loop (callback contract). */
        tether__conn_fail(c, rv, "connect to %s: %s", url, tether_strerror(rv));
    }
    *out = c;
    return TETHER_OK;
}
