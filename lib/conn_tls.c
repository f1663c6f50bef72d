/* SPDX-License-Identifier: MIT */
/* The TLS accessors of a connection beyond tether_conn_tls_info() (which
 * is in conn.c): tether_conn_tls_peer_cert() and the OpenSSL objects of
 * <tether/openssl.h>. They check the connection's state the way
 * tether_conn_tls_info() does and leave the rest to the TLS layer
 * (tls_peer.c), which knows nothing of connections. */
#include "conn.h"
#include "tls.h"
#include "ws.h"

#include <tether/openssl.h>

/* The transport of a connection whose TLS handshake has completed and that
 * is established: TETHER_OK, or the codes of tether_conn_tls_info(). */
static int conn_tls_transport(const tether_conn *c, const struct tether_transport **out)
{
    *out = NULL;
    if (c == NULL) {
        return TETHER_EINVAL;
    }
    if (c->tr == NULL) {
        return c->cfg->tls != NULL ? TETHER_ENOTCONN : TETHER_ENOTSUP;
    }
    if (c->state == TETHER__CS_HANDSHAKING) {
        /* The TLS layer may be done while the connection is not yet. */
        return c->cfg->tls != NULL ? TETHER_ENOTCONN : TETHER_ENOTSUP;
    }
    *out = tether__ws_inner(c->tr); /* wss://: the TLS layer under WebSocket */
    return TETHER_OK;
}

int tether_conn_tls_peer_cert(const tether_conn *c, tether_tls_cert_format format, void *buf,
                              size_t cap, size_t *out_len)
{
    if (out_len != NULL) {
        *out_len = 0;
    }
    if (c == NULL || out_len == NULL || (buf == NULL && cap > 0) ||
        (format != TETHER_TLS_CERT_DER && format != TETHER_TLS_CERT_PEM)) {
        return TETHER_EINVAL;
    }
    const struct tether_transport *tr;
    int rv = conn_tls_transport(c, &tr);
    if (rv != TETHER_OK) {
        return rv;
    }
    return tether__tls_transport_peer_cert(tr, format, buf, cap, out_len);
}

SSL *tether_conn_tls_ssl(const tether_conn *c)
{
    const struct tether_transport *tr;
    return conn_tls_transport(c, &tr) == TETHER_OK ? tether__tls_transport_ssl(tr) : NULL;
}

X509 *tether_conn_tls_peer_x509(const tether_conn *c)
{
    SSL *ssl = tether_conn_tls_ssl(c);
    return ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
}
