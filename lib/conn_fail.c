/* SPDX-License-Identifier: MIT */
/* The wording of a connection's failures: the detail buffer behind
 * tether_conn_last_error() (allocated on the first formatted detail and
 * reused by the next), and the texts of a failed read or write, which
 * name the setting that made the kernel give up, if any. The state
 * machine (conn.c) ends the connection; this file only says why. */
#include "conn_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void tether__conn_vset_err(tether_conn *c, const char *fmt, va_list ap)
{
    if (!c->err_owned) {
        char *b = malloc(TETHER_ERROR_MSG_MAX);
        if (b == NULL) {
            return; /* the previous detail stays */
        }
        c->err = b;
        c->err_owned = true;
    }
    vsnprintf((char *)c->err, TETHER_ERROR_MSG_MAX, fmt, ap);
}

void tether__conn_set_err(tether_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tether__conn_vset_err(c, fmt, ap);
    va_end(ap);
}

/* Fails with the transport's own detail, prefixed with what we were doing. */
void tether__conn_fail_io(tether_conn *c, int rv, const char *what)
{
    const char *d = c->tr != NULL ? c->tr->ops->last_error(c->tr) : NULL;
    const tether_conn_opts *o = &c->cfg->o;
    if (rv == TETHER_ECONNRESET) {
        tether__conn_fail_reset(c, what); /* may suggest tls:// (conn_read.c) */
    } else if (rv == TETHER_ETIMEDOUT) {
        /* The kernel gave up on the peer: say which of our settings made
         * it do so, if any. */
        if (o->user_timeout_ms > 0) {
            tether__conn_fail(c, rv,
                              "TCP user timeout during %s: sent data stayed unacknowledged for "
                              "%d ms (TCP_USER_TIMEOUT)",
                              what, o->user_timeout_ms);
        } else if (o->keepalive) {
            tether__conn_fail(c, rv,
                              "TCP keepalive timeout during %s: the peer stopped answering "
                              "(or TCP retransmissions gave up)",
                              what);
        } else {
            tether__conn_fail(c, rv,
                              "%s failed: connection timed out (TCP retransmissions "
                              "gave up)",
                              what);
        }
    } else {
        tether__conn_fail(c, rv, "%s failed: %s", what, d != NULL ? d : tether_strerror(rv));
    }
}
