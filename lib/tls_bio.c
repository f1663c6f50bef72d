/* SPDX-License-Identifier: MIT */
/* The TLS transport's socket BIO: OpenSSL's socket I/O for transport_tls.c.
 *
 * It calls send() with MSG_NOSIGNAL and recv(), because OpenSSL's socket
 * BIO uses write(), which raises SIGPIPE when the peer has gone; the
 * library must neither die of that nor touch the process's signal
 * dispositions. It also keeps the first bytes the peer sent, so that a peer
 * that does not speak TLS at all (plain TCP, HTTP) is named as such instead
 * of as a protocol error (tls_errors.c), and the last socket error.
 * While handshaking it skips the recv() that would follow our own flight
 * within one step and find nothing (TF_AWAIT): a system call per flight.
 *
 * A loop has one such BIO, shared by all its TLS transports (tls_idle.c
 * keeps it): its data is the loop's struct tls_loop, which names the
 * transport whose SSL call is running (tether__tls_bind). */
#include "tls_transport.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int tether__tls_bio_type;

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *data, int len)
{
    struct tls_transport *t = ((struct tls_loop *)BIO_get_data(b))->cur;
    BIO_clear_retry_flags(b);
    ssize_t n;
    do {
        n = send(t->base.fd, data, (size_t)len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            BIO_set_retry_write(b);
        } else {
            t->base.last_errno = errno;
        }
        return -1;
    }
    if (!(t->base.flags & TF_HS_DONE)) {
        t->base.flags |= TF_AWAIT; /* a flight: the peer has yet to answer it */
    }
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct tls_transport *t = ((struct tls_loop *)BIO_get_data(b))->cur;
    BIO_clear_retry_flags(b);
    if (TETHER__UNLIKELY(t->base.flags & TF_AWAIT)) {
        BIO_set_retry_read(b); /* (a recv() now would find nothing) */
        return -1;
    }
    ssize_t n;
    do {
        n = recv(t->base.fd, buf, (size_t)len, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (t->nfirst < TLS_FIRST_MAX) {
            size_t k = TETHER__MIN((size_t)n, (size_t)(TLS_FIRST_MAX - t->nfirst));
            memcpy(t->first + t->nfirst, buf, k);
            t->nfirst = (t->nfirst + k) & 0xffu;
        }
        return (int)n;
    }
    if (n == 0) {
        t->base.flags |= TF_EOF;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_read(b);
    } else {
        t->base.last_errno = errno;
    }
    return -1;
}

/* OpenSSL asks a dozen questions per record read or written, nearly all
 * answered by the default: the transport is looked up only for the two
 * that need it. */
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF: {
        const struct tls_loop *l = BIO_get_data(b);
        const struct tls_transport *t = l != NULL ? l->cur : NULL;
        return t != NULL && (t->base.flags & TF_EOF) ? 1 : 0;
    }
    case BIO_C_GET_FD: {
        const struct tls_loop *l = BIO_get_data(b);
        const struct tls_transport *t = l != NULL ? l->cur : NULL;
        if (t == NULL) {
            return -1;
        }
        if (ptr != NULL) {
            *(int *)ptr = t->base.fd;
        }
        return t->base.fd;
    }
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    BIO_METHOD *m = BIO_meth_new(type, "tether socket");
    if (m == NULL) {
        return;
    }
    tether__tls_bio_type = type;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    g_bio_method = m;
}

BIO_METHOD *tether__tls_bio_method(void)
{
    pthread_once(&g_bio_once, bio_method_init);
    return g_bio_method;
}
