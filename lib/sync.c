/* SPDX-License-Identifier: MIT */
/* The blocking API: a private loop per connection, run only inside calls
 * until the operation completes or its deadline passes. It is the event
 * API's code path with a wait around it, not a second implementation. */
#include "conn.h"

#include <tether/delivery.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Received messages held for tether_sync_recv(); reading pauses above this
 * many bytes so that a peer cannot make us buffer without bound. */
#define SYNC_RECV_LIMIT (4u * 1024u * 1024u)

struct sync_msg {
    struct sync_msg *next;
    size_t len;
    uint8_t data[];
};

struct tether_sync {
    tether_loop *loop;
    tether_conn *c;
    bool connect_done;
    int connect_status;
    bool closed;
    int close_reason;
    bool paused;
    struct sync_msg *head;
    struct sync_msg *tail;
    size_t held;
    int close_timeout_ms;
    size_t hwm;
    char err[TETHER_ERROR_MSG_MAX];
    /* tether_sync_call(): the outcome of the call in progress. */
    bool call_done;
    int call_status;
    uint8_t *reply;
    size_t reply_len;
};

static void sync_set_err(tether_sync *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sync_set_err(tether_sync *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
}

static void sync_on_connect(tether_conn *c, int status, void *ud)
{
    tether_sync *s = ud;
    s->connect_done = true;
    s->connect_status = status;
    if (status != TETHER_OK) {
        sync_set_err(s, "%s", tether_conn_last_error(c));
    }
}

static void sync_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    tether_sync *s = ud;
    struct sync_msg *m = malloc(sizeof *m + len);
    if (m == NULL) {
        /* Losing a message silently is not an option: end the connection
         * so the caller learns about it. */
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory holding a %zu-byte message", len);
        return;
    }
    m->next = NULL;
    m->len = len;
    if (len > 0) {
        memcpy(m->data, data, len);
    }
    if (s->tail != NULL) {
        s->tail->next = m;
    } else {
        s->head = m;
    }
    s->tail = m;
    s->held += len;
    if (s->held > SYNC_RECV_LIMIT && !s->paused) {
        s->paused = true;
        tether_conn_pause(c);
    }
}

static void sync_on_close(tether_conn *c, int reason, void *ud)
{
    tether_sync *s = ud;
    s->closed = true;
    s->close_reason = reason;
    if (reason != TETHER_OK && reason != TETHER_ECANCELED) {
        sync_set_err(s, "%s", tether_conn_last_error(c));
    }
    s->c = NULL;
}

static uint64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? UINT64_MAX : tether__now_ms() + (uint64_t)timeout_ms;
}

/* Runs the loop until done(s) holds or the deadline passes. The first
 * iteration does not block: API calls made since the last run (a send, a
 * close) have work queued that may satisfy the condition by itself. */
static int sync_wait(tether_sync *s, uint64_t deadline, bool (*done)(const tether_sync *s))
{
    for (int i = 0; !done(s); i++) {
        uint64_t now = tether__now_ms();
        if (i > 0 && deadline != UINT64_MAX && now >= deadline) {
            return TETHER_ETIMEDOUT;
        }
        int wait = -1;
        if (i == 0) {
            wait = 0;
        } else if (deadline != UINT64_MAX) {
            uint64_t left = deadline - now;
            wait = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        int rv = tether_loop_run_once(s->loop, wait);
        if (rv < 0) {
            return rv;
        }
    }
    return TETHER_OK;
}

static bool sync_connect_done(const tether_sync *s)
{
    return s->connect_done;
}

static bool sync_closed(const tether_sync *s)
{
    return s->closed;
}

static bool sync_can_send(const tether_sync *s)
{
    return s->closed || tether_conn_queued(s->c) < s->hwm;
}

static bool sync_flushed(const tether_sync *s)
{
    return s->closed || tether_conn_queued(s->c) == 0;
}

static bool sync_has_msg(const tether_sync *s)
{
    return s->closed || s->head != NULL;
}

static void sync_free(tether_sync *s)
{
    /* Let a lingering close finish; it is bounded by the library's linger
     * time, so this cannot hang. */
    for (int i = 0; i < 1000 && tether_loop_run_once(s->loop, 100) > 0; i++) {
    }
    tether_loop_free(s->loop);
    struct sync_msg *m = s->head;
    while (m != NULL) {
        struct sync_msg *next = m->next;
        free(m);
        m = next;
    }
    free(s);
}

int tether_sync_connect(tether_sync **out, const char *url, const tether_conn_opts *opts,
                        int timeout_ms, tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "options not initialised with tether_conn_opts_init()");
    }
    tether_sync *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    /* The private loop takes the caller's DNS settings (servers, timeout,
     * tries) from the field appended for this purpose, if the caller's
     * header has it. */
    const tether_loop_opts *lo = NULL;
    if (opts != NULL && opts->size >= offsetof(tether_conn_opts, loop_opts) + sizeof lo) {
        lo = opts->loop_opts;
    }
    int rv = tether_loop_new(&s->loop, lo);
    if (rv != TETHER_OK) {
        free(s);
        if (rv == TETHER_EINVAL) {
            return tether__set_error(out_err, rv,
                                     "invalid loop_opts (dns_servers, dns_timeout_ms or "
                                     "dns_tries)");
        }
        return tether__set_error(out_err, rv, "cannot create a loop: %s", tether_strerror(rv));
    }
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    if (opts != NULL) {
        tether__opts_merge(&o, sizeof o, opts);
        o.size = sizeof o;
    }
    o.userdata = s;
    o.on_connect = sync_on_connect;
    o.on_message = sync_on_message;
    o.on_drain = NULL;
    o.on_close = sync_on_close;
    if (timeout_ms >= 0 && (o.connect_timeout_ms < 0 || timeout_ms < o.connect_timeout_ms)) {
        o.connect_timeout_ms = timeout_ms;
    }
    s->close_timeout_ms = o.close_timeout_ms;
    s->hwm = o.send_hwm;
    rv = tether_conn_dial(&s->c, s->loop, url, &o, out_err);
    if (rv != TETHER_OK) {
        tether_loop_free(s->loop);
        free(s);
        return rv;
    }
    /* The connection's own deadline (capped to timeout_ms above) ends the
     * attempt and names what was tried; this wait is only a safety net, so
     * it allows a little longer for that report to arrive. */
    uint64_t deadline = deadline_of(timeout_ms);
    if (deadline != UINT64_MAX) {
        deadline += 250;
    }
    rv = sync_wait(s, deadline, sync_connect_done);
    if (!s->connect_done) {
        tether_conn_abort(s->c);
        if (rv == TETHER_ETIMEDOUT) {
            sync_set_err(s, "connect to %s timed out after %d ms", url, timeout_ms);
        }
    } else {
        rv = s->connect_status;
    }
    if (rv != TETHER_OK) {
        tether__set_error(out_err, rv, "%s", s->err[0] ? s->err : tether_strerror(rv));
        sync_free(s);
        return rv;
    }
    *out = s;
    return TETHER_OK;
}

static int sync_closed_status(const tether_sync *s)
{
    return s->close_reason == TETHER_OK ? TETHER_ECLOSED : s->close_reason;
}

int tether_sync_send(tether_sync *s, const void *data, size_t len, int timeout_ms)
{
    if (s == NULL || (data == NULL && len > 0)) {
        return TETHER_EINVAL;
    }
    if (s->closed) {
        return sync_closed_status(s);
    }
    uint64_t deadline = deadline_of(timeout_ms);
    int rv;
    for (;;) {
        rv = tether_conn_send(s->c, data, len);
        if (rv != TETHER_EAGAIN) {
            break;
        }
        rv = sync_wait(s, deadline, sync_can_send);
        if (rv != TETHER_OK) {
            if (rv == TETHER_ETIMEDOUT) {
                sync_set_err(s, "send timed out after %d ms: the send queue stayed full",
                             timeout_ms);
            }
            return rv;
        }
        if (s->closed) {
            return sync_closed_status(s);
        }
    }
    if (rv != TETHER_OK) {
        sync_set_err(s, "send failed: %s", tether_strerror(rv));
        return rv;
    }
    rv = sync_wait(s, deadline, sync_flushed);
    if (rv != TETHER_OK) {
        if (rv == TETHER_ETIMEDOUT) {
            sync_set_err(s,
                         "send timed out after %d ms with %zu bytes still queued (they stay "
                         "queued and will be sent)",
                         timeout_ms, tether_conn_queued(s->c));
        }
        return rv;
    }
    if (s->closed) {
        return sync_closed_status(s);
    }
    return TETHER_OK;
}

/* Waits for the next message; TETHER_OK when one is first in line. */
static int sync_wait_msg(tether_sync *s, int timeout_ms)
{
    int rv = sync_wait(s, deadline_of(timeout_ms), sync_has_msg);
    if (rv != TETHER_OK) {
        if (rv == TETHER_ETIMEDOUT) {
            sync_set_err(s, "no message within %d ms", timeout_ms);
        }
        return rv;
    }
    return s->head != NULL ? TETHER_OK : sync_closed_status(s);
}

/* Takes the first message off the list; reading resumes once the list has
 * shrunk enough. */
static struct sync_msg *sync_pop(tether_sync *s)
{
    struct sync_msg *m = s->head;
    s->head = m->next;
    if (s->head == NULL) {
        s->tail = NULL;
    }
    s->held -= m->len;
    if (s->paused && s->held <= SYNC_RECV_LIMIT / 2 && s->c != NULL) {
        s->paused = false;
        tether_conn_resume(s->c);
    }
    return m;
}

int tether_sync_recv(tether_sync *s, tether_msg *out_msg, int timeout_ms)
{
    if (s == NULL || out_msg == NULL) {
        return TETHER_EINVAL;
    }
    out_msg->data = NULL;
    out_msg->len = 0;
    int rv = sync_wait_msg(s, timeout_ms);
    if (rv != TETHER_OK) {
        return rv;
    }
    struct sync_msg *m = sync_pop(s);
    size_t len = m->len;
    if (len > 0) {
        /* Hand over the payload without another copy: it sits right after
         * the list node, so move it to the front of the same block. */
        memmove(m, m->data, len);
        out_msg->data = (uint8_t *)m;
        out_msg->len = len;
    } else {
        free(m);
    }
    return TETHER_OK;
}

int tether_sync_recv_into(tether_sync *s, void *buf, size_t cap, size_t *out_len, int timeout_ms)
{
    if (out_len != NULL) {
        *out_len = 0;
    }
    if (s == NULL || out_len == NULL || (buf == NULL && cap > 0)) {
        return TETHER_EINVAL;
    }
    int rv = sync_wait_msg(s, timeout_ms);
    if (rv != TETHER_OK) {
        return rv;
    }
    size_t len = s->head->len;
    *out_len = len;
    if (len > cap) {
        /* Left first in line, so that a retry with a larger buffer gets it. */
        sync_set_err(s, "the next message is %zu bytes; the buffer holds %zu", len, cap);
        return TETHER_EMSGSIZE;
    }
    struct sync_msg *m = sync_pop(s);
    if (len > 0) {
        memcpy(buf, m->data, len);
    }
    free(m);
    return TETHER_OK;
}

void tether_msg_free(tether_msg *msg)
{
    if (msg != NULL) {
        free(msg->data);
        msg->data = NULL;
        msg->len = 0;
    }
}

int tether_sync_close(tether_sync *s)
{
    if (s == NULL) {
        return TETHER_OK;
    }
    int rv = TETHER_OK;
    if (!s->closed) {
        tether_conn_close(s->c);
        sync_wait(s, deadline_of(s->close_timeout_ms), sync_closed);
        if (!s->closed) {
            tether_conn_abort(s->c);
            rv = TETHER_ETIMEDOUT;
        } else {
            rv = s->close_reason;
        }
    }
    sync_free(s);
    return rv;
}

static void sync_on_reply(tether_conn *c, int status, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    tether_sync *s = ud;
    s->call_done = true;
    s->call_status = status;
    if (status == TETHER_OK) {
        s->reply = malloc(len > 0 ? len : 1);
        if (s->reply == NULL) {
            s->call_status = TETHER_ENOMEM;
            return;
        }
        if (len > 0) {
            memcpy(s->reply, data, len);
        }
        s->reply_len = len;
    }
}

static bool sync_call_done(const tether_sync *s)
{
    return s->call_done;
}

int tether_sync_call(tether_sync *s, const void *req, size_t len, tether_msg *out_reply,
                     int timeout_ms)
{
    if (out_reply != NULL) {
        out_reply->data = NULL;
        out_reply->len = 0;
    }
    if (s == NULL || out_reply == NULL || (req == NULL && len > 0)) {
        return TETHER_EINVAL;
    }
    if (s->closed) {
        return sync_closed_status(s);
    }
    s->call_done = false;
    s->reply = NULL;
    s->reply_len = 0;
    /* The call's own timeout ends it (and a closed connection fails it),
     * so the wait needs no deadline of its own. */
    int rv = tether_call(s->c, req, len, timeout_ms < 0 ? 0 : (timeout_ms > 0 ? timeout_ms : 1),
                         sync_on_reply, s, NULL);
    if (rv != TETHER_OK) {
        sync_set_err(s, "call failed: %s",
                     rv == TETHER_ENOTSUP ? tether_conn_last_error(s->c) : tether_strerror(rv));
        return rv;
    }
    rv = sync_wait(s, UINT64_MAX, sync_call_done);
    if (rv != TETHER_OK) {
        return rv;
    }
    rv = s->call_status;
    if (rv == TETHER_OK) {
        out_reply->data = s->reply;
        out_reply->len = s->reply_len;
        s->reply = NULL;
    } else if (rv == TETHER_ETIMEDOUT) {
        sync_set_err(s, "no reply within %d ms (the connection stays usable)", timeout_ms);
    } else if (rv == TETHER_ENOTSUP) {
        sync_set_err(s, "call failed: the peer does not take calls (no HELLO capability bit 0)");
    } else if (s->err[0] == '\0') {
        sync_set_err(s, "call failed: %s", tether_strerror(rv));
    }
    return rv;
}

const char *tether_sync_last_error(const tether_sync *s)
{
    return s != NULL ? s->err : "";
}
