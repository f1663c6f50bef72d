/* SPDX-License-Identifier: MIT */
/* Options of reconnecting clients: their defaults
 * (tether_client_opts_init) and the checks tether_client_new() makes
 * before it creates anything, as conn_opts.c does for connections. */
#include "reconnect.h"

#include <stdint.h>
#include <string.h>

void tether_client_opts_init_sized(tether_client_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_client_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    d.initial_backoff_ms = 1000;
    d.multiplier = 1.6;
    d.jitter = 0.2;
    d.max_backoff_ms = 120000;
    d.min_connect_timeout_ms = 20000;
    d.stable_ms = 10000;
    d.reconnect_spread_ms = 1000;
    d.queue_max_bytes = 4u * 1024u * 1024u;
    d.queue_max_msgs = 65536;
    tether__sized_fill(opts, size, &d, sizeof d);
}

int tether__client_check_opts(const tether_client_opts *o, tether_error *err)
{
    if (o->initial_backoff_ms == 0) {
        return tether__set_error(err, TETHER_EINVAL, "initial_backoff_ms must be positive");
    }
    if (!(o->multiplier >= 1.0 && o->multiplier <= 1000.0)) {
        return tether__set_error(err, TETHER_EINVAL, "multiplier must be between 1 and 1000");
    }
    if (!(o->jitter >= 0.0 && o->jitter <= 1.0)) {
        return tether__set_error(err, TETHER_EINVAL, "jitter must be between 0 and 1");
    }
    if (o->max_backoff_ms < o->initial_backoff_ms) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "max_backoff_ms (%u) is below initial_backoff_ms (%u)",
                                 o->max_backoff_ms, o->initial_backoff_ms);
    }
    if (o->min_connect_timeout_ms == 0 || o->min_connect_timeout_ms > INT32_MAX) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "min_connect_timeout_ms must be between 1 and %d", INT32_MAX);
    }
    if (o->queue_max_bytes == 0 || o->queue_max_msgs == 0) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "queue_max_bytes and queue_max_msgs must be positive");
    }
    return TETHER_OK;
}
