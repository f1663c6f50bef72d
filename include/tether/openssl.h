/* SPDX-License-Identifier: MIT */
/**
 * @file openssl.h
 * @brief Opt-in access to the OpenSSL objects behind a TLS connection.
 *
 * @defgroup openssl OpenSSL access
 * @ingroup tls
 * @brief The `SSL *` and `X509 *` of a connection, for what tether does not
 *        wrap.
 *
 * This is the only tether header that uses OpenSSL types, and the umbrella
 * header `<tether/tether.h>` does not include it: a program that includes
 * it compiles against OpenSSL's headers (OpenSSL 3, the version tether was
 * built with) and, to call OpenSSL functions on these objects, links with
 * `-lssl -lcrypto` itself. Everything else in tether works without it.
 *
 * The objects belong to the connection and are **borrowed**: valid while
 * tether_conn_tls_info() is (from `on_connect` or `on_accept` until
 * `on_close` returns). Use them to read: certificate extensions, the
 * public key, exported keying material (SSL_export_keying_material()),
 * the peer's full chain. Do not read from, write to, shut down, free or
 * reconfigure them (BIO, callbacks, verification settings): tether drives
 * the connection and would no longer know its state. Loop thread only.
 * @{
 */
#ifndef TETHER_OPENSSL_H
#define TETHER_OPENSSL_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <tether/conn.h>
#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief The OpenSSL connection object of a TLS connection.
 * @param[in] c The connection.
 * @return The `SSL *` (borrowed, see the group description); NULL when
 *         @p c is NULL, not a TLS connection, or its handshake has not
 *         completed (or it has ended).
 */
TETHER_API SSL *tether_conn_tls_ssl(const tether_conn *c);

/**
 * @brief The certificate the peer presented.
 *
 * The same certificate as tether_conn_tls_peer_cert(), as an OpenSSL
 * object. Take your own reference with X509_up_ref() to keep it beyond the
 * connection.
 * @param[in] c The connection.
 * @return The `X509 *` (borrowed); NULL when tether_conn_tls_ssl() is, or
 *         the peer presented no certificate.
 */
TETHER_API X509 *tether_conn_tls_peer_x509(const tether_conn *c);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_OPENSSL_H */
/** @} */
