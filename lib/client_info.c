/* SPDX-License-Identifier: MIT */
/* What the application can read about a reconnecting client: its state,
 * current connection, last error, user data and statistics (the held
 * messages and the connections it had, plus the current one's counters).
 * Read-only accessors of struct tether_client (reconnect.h); the client
 * itself is reconnect.c. */
#include "conn.h"
#include "reconnect.h"

#include <string.h>

tether_client_state tether_client_get_state(const tether_client *cl)
{
    return cl != NULL ? cl->state : (tether_client_state)0;
}

tether_conn *tether_client_conn(const tether_client *cl)
{
    return cl != NULL ? cl->conn : NULL;
}

const char *tether_client_last_error(const tether_client *cl)
{
    return cl != NULL ? cl->err : "";
}

void *tether_client_userdata(const tether_client *cl)
{
    return cl != NULL ? cl->o.userdata : NULL;
}

int tether_client_get_stats_sized(const tether_client *cl, tether_stats *st, size_t size)
{
    if (cl == NULL || st == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    tether_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    s.bytes_in = cl->bytes_in;
    s.bytes_out = cl->bytes_out;
    s.msgs_in = cl->msgs_in;
    s.msgs_out = cl->msgs_out;
    s.queued_bytes = cl->held_bytes;
    s.queued_msgs = cl->held_msgs;
    s.connects = cl->connects;
    s.reconnects = cl->connects > 0 ? cl->connects - 1 : 0;
    s.attempts = cl->attempts;
    s.undelivered = cl->undelivered;
    s.backoff_ms = cl->backoff_ms;
    s.heartbeat_ms = cl->last_hb_ms;
    s.rtt_us = cl->last_rtt_us;
    s.pings_sent = cl->pings_sent;
    s.pongs_received = cl->pongs_in;
    tether__cdone_stats(cl->dq, &s);
    tether__calo_stats(cl, &s);
    const tether_conn *c = cl->conn;
    if (c != NULL) {
        s.bytes_in += c->bytes_in;
        s.bytes_out += c->bytes_out;
        s.msgs_in += tether__conn_msgs_in(c);
        uint64_t pings, pongs;
        int64_t rtt;
        tether__conn_hb_stats(c, &pings, &pongs, &rtt);
        s.pings_sent += pings;
        s.pongs_received += pongs;
        s.heartbeat_ms = tether__conn_hb_ms(c);
        if (rtt >= 0) {
            s.rtt_us = rtt;
        }
        if (cl->connected && c->ready_at != 0) {
            s.uptime_ms = tether__loop_time(cl->loop) - c->ready_at;
        }
    }
    tether__sized_fill(st, size, &s, sizeof s);
    return TETHER_OK;
}

const char *tether_client_state_name(tether_client_state state)
{
    switch (state) {
    case TETHER_CLIENT_CONNECTING:
        return "connecting";
    case TETHER_CLIENT_CONNECTED:
        return "connected";
    case TETHER_CLIENT_DISCONNECTED:
        return "disconnected";
    case TETHER_CLIENT_WAITING:
        return "waiting";
    case TETHER_CLIENT_GAVE_UP:
        return "gave up";
    case TETHER_CLIENT_CLOSED:
        return "closed";
    }
    return "unknown";
}
