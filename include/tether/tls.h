/* SPDX-License-Identifier: MIT */
/**
 * @file tls.h
 * @brief TLS (OpenSSL 3): configuration objects and per-connection TLS details.
 *
 * @defgroup tls TLS
 * @brief Encrypted, authenticated connections with `tls://` URLs.
 *
 * A `tls://host:port` URL selects TLS on the same APIs as `tcp://`:
 * tether_conn_dial(), tether_listen() and tether_sync_connect(). Messages,
 * framing, callbacks and errors behave exactly as over TCP; the TLS
 * handshake is part of connection set-up, so `on_connect` (dialled) and
 * `on_accept` (accepted) only run once it has succeeded.
 *
 * **Configuration.** A #tether_tls_config holds everything TLS needs: whom to
 * trust, our own certificate, versions, ciphers, ALPN and the client session
 * cache. It is built once with tether_tls_config_new() from a
 * #tether_tls_opts, is reference-counted, and is shared by every connection
 * that uses it (set tether_conn_opts::tls). A dialled `tls://` connection
 * with no configuration uses a built-in default client configuration that
 * trusts the system's CA store. A `tls://` listener needs a configuration
 * with a certificate and key.
 *
 * **Secure by default.** A client verifies the server's certificate chain
 * against its trust store AND checks that the certificate names the host in
 * the URL: `tls://localhost:5555` requires the name `localhost`,
 * `tls://127.0.0.1:5555` the IP address 127.0.0.1, and `tls+srv://` the SRV
 * target connected to (tether_tls_opts::server_name overrides the name). The
 * only way to turn verification off is tether_tls_opts::insecure_skip_verify.
 * TLS 1.2 is the lowest version accepted, renegotiation is off, and a
 * graceful tether_conn_close() sends close_notify.
 *
 * **Errors.** A failed handshake reports a code that says what kind of
 * problem it was and a detail string (tether_conn_last_error(), the
 * `on_connect`/`on_close` status, or the listener's `on_error` for accepted
 * connections) that names it, for example:
 * - #TETHER_ECERT: `certificate verify failed: unknown CA: ...`,
 *   `... certificate has expired ...`, `... is not yet valid ...`,
 *   `host name mismatch: the certificate is not valid for 'localhost' ...`;
 * - #TETHER_ECERTREQUIRED: the server requires a client certificate and none
 *   was sent;
 * - #TETHER_ENOSHARED: no TLS version or cipher suite in common;
 * - #TETHER_EALPN: no application protocol (ALPN) in common;
 * - #TETHER_ENOTTLS: the peer does not speak TLS (plain TCP, HTTP, ...);
 * - #TETHER_ETIMEDOUT: `TLS handshake timed out ...`;
 * - #TETHER_ETRUNCATED: after the handshake, the peer ended the stream
 *   without close_notify (a clean close_notify gives #TETHER_EOF).
 *
 * **A refused client certificate, TLS 1.2 and 1.3.** With TLS 1.2 the
 * server judges the client's certificate inside the handshake, so a refusal
 * fails the client's handshake. With TLS 1.3 the client finishes its side
 * of the handshake one flight before the server has checked its
 * certificate, and the server's verdict arrives afterwards: the alert that
 * refuses it, or the session tickets (or data) it sends once it has
 * accepted it. So a TLS 1.3 client that was asked for a certificate
 * (whether it has one or not) waits for that first word from the server
 * before it reports the connection: a refusal fails `on_connect` with
 * #TETHER_ECERT (`the server rejected our certificate (alert 'bad
 * certificate')`) or #TETHER_ECERTREQUIRED, exactly as with TLS 1.2, and
 * never shows up as a successful connect. tether servers always send a
 * ticket after accepting a client certificate (with
 * tether_tls_opts::no_resumption too: then one that is never accepted
 * back), as OpenSSL, Go and most servers do by default. For a server that
 * sends neither tickets nor data until the client speaks,
 * tether_tls_opts::no_client_cert_wait turns the wait off; the refusal
 * then ends the connection through `on_close` after `on_connect`
 * succeeded. The server's side always fails in its handshake.
 *
 * **Authorising the peer during the handshake.** tether_tls_opts::verify_cb
 * sees the certificates the peer sent (DER) and OpenSSL's verdict, and may
 * refuse the peer with an alert and a reason: servers authorise clients
 * (for example by their SPIFFE ID, see tether_tls_info::peer_sans), clients
 * pin the server's certificate. A refusal fails the handshake on both
 * sides, as described above; see #tether_tls_verify_cb.
 *
 * **Session resumption.** A client configuration keeps the sessions its
 * servers hand out (TLS 1.3 tickets and TLS 1.2 sessions), keyed by the
 * target (host, port and server name). A later connection to the same
 * target through the same configuration resumes automatically, which
 * skips the certificate exchange and most of the handshake's cost. Servers
 * issue tickets. tether_tls_info::resumed tells whether it happened;
 * tether_tls_opts::no_resumption turns all of this off.
 *
 * **Threading.** A #tether_tls_config may be shared by connections on any
 * number of loops and threads: every function on it is thread-safe.
 * tether_conn_tls_info() is loop-thread only, like every connection function.
 *
 * **Signals.** The library never raises SIGPIPE (writes use MSG_NOSIGNAL)
 * and never changes the process's signal dispositions.
 * @{
 */
#ifndef TETHER_TLS_H
#define TETHER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/conn.h>
#include <tether/error.h>
#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A TLS configuration (opaque, reference-counted, thread-safe). */
typedef struct tether_tls_config tether_tls_config;

/** @brief Whether a server asks its clients for a certificate (mutual TLS). */
typedef enum tether_tls_client_auth {
    TETHER_TLS_CLIENT_AUTH_NONE = 0,     /**< Do not ask (default). */
    TETHER_TLS_CLIENT_AUTH_OPTIONAL = 1, /**< Ask; a client without one is accepted, one that
                                              sends a certificate must pass verification. */
    TETHER_TLS_CLIENT_AUTH_REQUIRED = 2, /**< Require a certificate that passes verification
                                              against the configured trust. */
} tether_tls_client_auth;

/**
 * @brief The TLS alerts a verify hook can refuse a peer with (RFC 8446,
 *        section 6.2); the numbers are the alert codes on the wire.
 */
typedef enum tether_tls_alert {
    TETHER_TLS_ALERT_BAD_CERTIFICATE = 42,         /**< bad_certificate: the usual refusal. */
    TETHER_TLS_ALERT_UNSUPPORTED_CERTIFICATE = 43, /**< unsupported_certificate. */
    TETHER_TLS_ALERT_CERTIFICATE_REVOKED = 44,     /**< certificate_revoked. */
    TETHER_TLS_ALERT_CERTIFICATE_EXPIRED = 45,     /**< certificate_expired. */
    TETHER_TLS_ALERT_UNKNOWN_CA = 48,              /**< unknown_ca. */
} tether_tls_alert;

/** @brief Longest reason a verify hook can give, including the NUL. */
#define TETHER_TLS_REASON_MAX 160

/** @brief One certificate in DER form (borrowed). */
typedef struct tether_tls_cert {
    const uint8_t *der; /**< The DER bytes. */
    size_t len;         /**< Their number. */
} tether_tls_cert;

/**
 * @brief What a verify hook is told about the peer; valid only while the
 *        hook runs.
 *
 * The library fills it; new fields are only ever added at the end, and
 * `size` tells which ones this library filled.
 */
typedef struct tether_tls_verify_info {
    /** `sizeof` the struct as the running library knows it: a field that
     *  ends beyond it was not filled (a program built against a newer
     *  header, running with an older library). */
    size_t size;
    /** true when we are the server judging a client's certificate; false
     *  when we are the client judging the server's. */
    bool is_server;
    /** OpenSSL's verdict: the chain leads to a trusted CA, every certificate
     *  is within its validity period and, on clients, the certificate is
     *  valid for the name dialled (or tether_tls_opts::server_name). False
     *  whenever any of that failed, also with
     *  tether_tls_opts::insecure_skip_verify. */
    bool preverified;
    /** OpenSSL's verification error, an `X509_V_ERR_*` code; 0 (X509_V_OK)
     *  when `preverified` is true. */
    int verify_error;
    /** What that means, in the words tether_conn_last_error() would use,
     *  e.g. "certificate verify failed: unknown CA: the server certificate
     *  'CN=x' is issued by 'CN=y', which is not trusted"; "ok" when
     *  `preverified` is true. */
    const char *verify_text;
    /** Clients: the name the certificate was checked against ("" with
     *  tether_tls_opts::insecure_skip_verify). Servers: the name the client
     *  asked for (SNI), "" when it sent none. */
    const char *server_name;
    /** Number of certificates in `chain` (at least 1). */
    size_t chain_len;
    /** The certificates the peer sent, its own first, then the
     *  intermediates as it sent them (borrowed). `chain[0]` is the one to
     *  pin: hash its DER with SHA-256 and compare with the expected digest. */
    const tether_tls_cert *chain;
} tether_tls_verify_info;

/**
 * @brief A verify hook: authorises the peer during the handshake.
 *
 * Called once per handshake in which the peer presents a certificate, after
 * OpenSSL has verified it, with OpenSSL's verdict in @p info: on clients for
 * every server, on servers for every client that sends a certificate (so
 * only with tether_tls_opts::client_auth other than
 * #TETHER_TLS_CLIENT_AUTH_NONE). A resumed session presents no certificate
 * and is not asked about again: it was authorised when it was made,
 * through the same configuration. If the hook's answers can change (a
 * revoked identity), set tether_tls_opts::no_resumption. Return 0 to
 * accept the peer or a
 * #tether_tls_alert to refuse it; any other value refuses it with
 * #TETHER_TLS_ALERT_BAD_CERTIFICATE.
 *
 * Accepting does not override OpenSSL: a peer that failed verification
 * (`preverified` false) is refused with OpenSSL's reason whatever the hook
 * returns, except on a client with tether_tls_opts::insecure_skip_verify,
 * where the hook alone decides (to pin a self-signed server certificate,
 * say). The hook still sees failed peers, to log them.
 *
 * A refusal sends the alert to the peer and fails the handshake on both
 * sides with #TETHER_ECERT. Our side's detail
 * (tether_conn_last_error(), or the listener's `on_error` on servers) is
 * `certificate rejected by the verify hook: the client certificate
 * 'CN=mallory' ...: REASON`; the peer's names the alert, e.g. `the
 * server rejected our certificate (alert 'bad certificate')`, since TLS
 * carries no text. A TLS 1.3 client that a server refuses sees its connect
 * fail too (see the group description).
 *
 * Runs on the loop thread of the connection that is handshaking; a
 * configuration shared by several loops calls it from each of their
 * threads, possibly at the same time. It must not block (it holds up the
 * handshake and everything else on its loop) and must not call back into
 * the connection, which the application has not seen yet.
 * @param[in]  info        The peer's certificates and OpenSSL's verdict (borrowed).
 * @param[out] reason      On refusal: why, for our side's error detail
 *                         (NUL-terminated, cut to @p reason_size - 1 bytes).
 *                         Empty on entry; may be left empty.
 * @param[in]  reason_size Size of @p reason: #TETHER_TLS_REASON_MAX.
 * @param[in]  ud          tether_tls_opts::verify_userdata.
 * @return 0 to accept, a #tether_tls_alert to refuse.
 */
typedef int (*tether_tls_verify_cb)(const tether_tls_verify_info *info, char *reason,
                                    size_t reason_size, void *ud);

/** @brief TLS protocol versions (tether_tls_opts::min_version and max_version). */
typedef enum tether_tls_version {
    TETHER_TLS_VERSION_DEFAULT = 0, /**< The default: TLS 1.2 as minimum, TLS 1.3 as maximum. */
    TETHER_TLS_VERSION_1_2 = 12,    /**< TLS 1.2 (RFC 5246). */
    TETHER_TLS_VERSION_1_3 = 13,    /**< TLS 1.3 (RFC 8446). */
} tether_tls_version;

/**
 * @brief Options for tether_tls_config_new().
 *
 * Initialise with tether_tls_opts_init(), then set what you need. Fields are
 * only ever added at the end (the `size` field tells the library which ones
 * the caller knows). Strings are copied by tether_tls_config_new(); files are
 * read by it (and again by tether_tls_config_reload()).
 */
typedef struct tether_tls_opts {
    size_t size; /**< Set by tether_tls_opts_init(); do not change. */
    /** PEM file of trusted CA certificates. When both this and `ca_dir` are
     *  NULL the system's trust store is used (OpenSSL's default paths, which
     *  honour the SSL_CERT_FILE and SSL_CERT_DIR environment variables). */
    const char *ca_file;
    /** Directory of trusted CA certificates in OpenSSL's hashed format
     *  (`openssl rehash`); may be combined with `ca_file`. */
    const char *ca_dir;
    /** PEM certificate chain, our certificate first: required on servers,
     *  and on clients that authenticate with a certificate. */
    const char *cert_file;
    /** PEM private key of `cert_file` (unencrypted). */
    const char *key_file;
    /** Servers: whether to ask clients for a certificate; default
     *  #TETHER_TLS_CLIENT_AUTH_NONE. Client certificates are verified against
     *  `ca_file` / `ca_dir` (or the system store). */
    tether_tls_client_auth client_auth;
    /** Lowest version accepted; default (and at least) #TETHER_TLS_VERSION_1_2. */
    tether_tls_version min_version;
    /** Highest version offered; default #TETHER_TLS_VERSION_1_3. */
    tether_tls_version max_version;
    /** TLS 1.2 cipher list in OpenSSL syntax; NULL for the default, forward-secret
     *  AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305). */
    const char *ciphers;
    /** TLS 1.3 cipher suites in OpenSSL syntax (e.g. "TLS_AES_128_GCM_SHA256");
     *  NULL for OpenSSL's default. */
    const char *ciphersuites;
    /** ALPN protocols, comma-separated in order of preference, e.g.
     *  "chat/1,chat/0"; NULL for none. A client offers them and fails with
     *  #TETHER_EALPN unless the server selects one. A server selects the first
     *  of its own list that the client offers and fails with #TETHER_EALPN if
     *  the client offers some but none of its; a client that offers no ALPN at
     *  all is accepted. */
    const char *alpn;
    /** Clients: the name to send as SNI and to verify the certificate
     *  against, instead of the URL's host (an IP address is verified as an
     *  address and not sent as SNI). NULL to use the URL's host, or for
     *  `tls+srv://` the SRV target's. */
    const char *server_name;
    /** Servers: how long an accepted connection may take to complete its
     *  handshake before it is closed (#TETHER_ETIMEDOUT through the
     *  listener's `on_error`); default (and 0) 10000, negative for no limit. Dialled
     *  connections are bounded by tether_conn_opts::connect_timeout_ms, which
     *  covers their handshake. */
    int handshake_timeout_ms;
    /** **Insecure**: a client accepts any server certificate, for any name,
     *  without verification (tether_tls_info::peer_verified stays false).
     *  For tests against servers with throw-away certificates only. */
    bool insecure_skip_verify;
    /** Turns session resumption off: servers issue no tickets and keep no
     *  sessions, clients neither store nor offer sessions, so every
     *  handshake is a full one. Default false (resumption on). A server
     *  that asks for client certificates still sends one TLS 1.3 ticket,
     *  which it never accepts back: it tells the client its certificate
     *  was accepted (see the group description). */
    bool no_resumption;
    /** Authorises the peer during the handshake; NULL for none (default).
     *  See #tether_tls_verify_cb. */
    tether_tls_verify_cb verify_cb;
    /** Passed to `verify_cb`. */
    void *verify_userdata;
    /** Clients, TLS 1.3: report the connection as soon as our side of the
     *  handshake is done, without waiting for the server's verdict on our
     *  certificate (see the group description). Only for servers that send
     *  neither session tickets nor data before the client speaks. Default
     *  false. */
    bool no_client_cert_wait;
} tether_tls_opts;

/**
 * @brief Fills @p opts with defaults; used through tether_tls_opts_init().
 * @param[out] opts The options.
 * @param[in]  size `sizeof *opts` as the caller's header defines it.
 */
TETHER_API void tether_tls_opts_init_sized(tether_tls_opts *opts, size_t size);

/**
 * @brief Initialises a #tether_tls_opts with the defaults.
 * @param opts Pointer to the options.
 */
#define tether_tls_opts_init(opts) tether_tls_opts_init_sized((opts), sizeof(*(opts)))

/**
 * @brief Builds a TLS configuration, reading every file it names.
 *
 * Thread-safe. The configuration is complete when this returns; problems
 * with files (missing, unreadable, not PEM, a key that does not match its
 * certificate) and options are reported here, not at connection time.
 * @param[out] out     Receives the configuration, with one reference owned by
 *                     the caller; release it with tether_tls_config_unref().
 * @param[in]  opts    Options, or NULL for a client configuration with the
 *                     system's trust store and every default.
 * @param[out] out_err Optional: on failure, the code and a message naming the
 *                     problem, e.g. "cannot read certificate 'srv.pem': No
 *                     such file or directory".
 * @retval TETHER_OK     Built.
 * @retval TETHER_EINVAL A NULL @p out, an unknown enum value, a bad cipher
 *                       list or ALPN list, a key without a certificate (or the
 *                       reverse), min_version above max_version.
 * @retval TETHER_ECERT  A certificate, key or CA file could not be loaded or
 *                       the key does not match the certificate.
 * @retval TETHER_ENOMEM Out of memory.
 * @retval TETHER_ETLS   OpenSSL failed for another reason (the message says why).
 */
TETHER_API int tether_tls_config_new(tether_tls_config **out, const tether_tls_opts *opts,
                                     tether_error *out_err);

/**
 * @brief Adds another certificate and key to a server configuration, chosen
 *        by SNI.
 *
 * When a client's server name (SNI) matches a name in one of the added
 * certificates (its subjectAltName DNS entries, wildcards included), the
 * server presents that certificate; otherwise it presents
 * tether_tls_opts::cert_file. Applies to handshakes that start after this
 * returns. Thread-safe.
 * @param[in]  cfg       The configuration.
 * @param[in]  cert_file PEM certificate chain.
 * @param[in]  key_file  PEM private key.
 * @param[out] out_err   Optional: on failure, the code and a message.
 * @retval TETHER_OK     Added.
 * @retval TETHER_EINVAL A NULL argument.
 * @retval TETHER_ECERT  The files could not be loaded or do not match.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_tls_config_add_cert(tether_tls_config *cfg, const char *cert_file,
                                          const char *key_file, tether_error *out_err);

/**
 * @brief Replaces the certificate and key of a live configuration.
 *
 * Loads the new files (and again the CA files and SNI certificates) into a
 * fresh internal generation; handshakes that start after this returns use
 * it, while established connections and handshakes in progress keep the
 * generation they started with. On failure nothing changes. Sessions
 * issued before the reload are not resumed afterwards. Thread-safe.
 * @param[in]  cfg       The configuration.
 * @param[in]  cert_file The new PEM certificate chain, or NULL to read the
 *                       current file again (e.g. after it was replaced on disk).
 * @param[in]  key_file  The new PEM private key, or NULL to read the current
 *                       file again.
 * @param[out] out_err   Optional: on failure, the code and a message.
 * @retval TETHER_OK     Reloaded.
 * @retval TETHER_EINVAL @p cfg is NULL, or the configuration has no
 *                       certificate and none is given.
 * @retval TETHER_ECERT  The files could not be loaded or do not match.
 * @retval TETHER_ENOMEM Out of memory.
 */
TETHER_API int tether_tls_config_reload(tether_tls_config *cfg, const char *cert_file,
                                        const char *key_file, tether_error *out_err);

/**
 * @brief Takes another reference to a configuration. Thread-safe.
 * @param[in] cfg The configuration; NULL is returned as is.
 * @return @p cfg.
 */
TETHER_API tether_tls_config *tether_tls_config_ref(tether_tls_config *cfg);

/**
 * @brief Releases a reference; the last one frees the configuration.
 *
 * Connections and listeners hold their own references, so a configuration
 * may be released as soon as the last tether_conn_dial() or tether_listen()
 * that uses it has returned. Thread-safe.
 * @param[in] cfg The configuration; NULL is ignored.
 */
TETHER_API void tether_tls_config_unref(tether_tls_config *cfg);

/** @brief Longest text kept in a #tether_tls_info string field, including the NUL. */
#define TETHER_TLS_INFO_STR_MAX 256

/** @brief tether_tls_info::truncated bits: which string fields were cut short. */
enum tether_tls_info_field {
    TETHER_TLS_INFO_ALPN = 1 << 0,             /**< tether_tls_info::alpn */
    TETHER_TLS_INFO_SERVER_NAME = 1 << 1,      /**< tether_tls_info::server_name */
    TETHER_TLS_INFO_PEER_SUBJECT = 1 << 2,     /**< tether_tls_info::peer_subject */
    TETHER_TLS_INFO_PEER_COMMON_NAME = 1 << 3, /**< tether_tls_info::peer_common_name */
    TETHER_TLS_INFO_PEER_ISSUER = 1 << 4,      /**< tether_tls_info::peer_issuer */
    TETHER_TLS_INFO_PEER_SANS = 1 << 5,        /**< tether_tls_info::peer_sans */
};

/**
 * @brief What a TLS connection negotiated and who the peer is.
 *
 * Filled by tether_conn_tls_info(). Every string is NUL-terminated. The
 * fields have a fixed size (#TETHER_TLS_INFO_STR_MAX) so that the struct
 * can grow at its end without breaking programs built against an older
 * header; text longer than a field is cut short and never silently:
 * `truncated` names every field that was cut. A field that can be cut is
 * for display and quick checks. For a decision (authorisation, pinning)
 * read the whole certificate with tether_conn_tls_peer_cert(), or use a
 * verify hook (tether_tls_opts::verify_cb), or the OpenSSL objects from
 * `<tether/openssl.h>`. The ALPN protocol and the SNI name are at most 255
 * bytes by the protocol, so those two always fit.
 */
typedef struct tether_tls_info {
    /** Set by tether_conn_tls_info(); do not change. */
    size_t size;
    /** "TLSv1.2" or "TLSv1.3" (a static string). */
    const char *version;
    /** The cipher suite, e.g. "TLS_AES_256_GCM_SHA384" (a static string). */
    const char *cipher;
    /** The session was resumed (an abbreviated handshake). */
    bool resumed;
    /** The peer presented a certificate. */
    bool has_peer_cert;
    /** That certificate was verified: its chain, its validity and, on clients,
     *  the server's name. False when there is none or verification was skipped. */
    bool peer_verified;
    /** The ALPN protocol, "" when none was negotiated. */
    char alpn[TETHER_TLS_INFO_STR_MAX];
    /** The SNI name (sent by a client, received by a server), "" when none. */
    char server_name[TETHER_TLS_INFO_STR_MAX];
    /** The peer certificate's subject in RFC 2253 form, e.g.
     *  "CN=alice,O=tether"; "" when there is none. */
    char peer_subject[TETHER_TLS_INFO_STR_MAX];
    /** Its common name (CN), e.g. "alice"; "" when there is none. */
    char peer_common_name[TETHER_TLS_INFO_STR_MAX];
    /** Its issuer in RFC 2253 form. */
    char peer_issuer[TETHER_TLS_INFO_STR_MAX];
    /** Its subjectAltName entries, comma-separated, in the order of the
     *  certificate, each with its type: "DNS:" names, "IP:" addresses
     *  (IPv4 or IPv6), "email:" addresses and "URI:" identifiers, e.g.
     *  "DNS:localhost,IP:127.0.0.1,IP:::1". A SPIFFE workload identity
     *  (an X.509-SVID) is its one URI entry, e.g.
     *  "URI:spiffe://tether.test/client"; the value is the text of the
     *  certificate, not normalised. Other entry types are left out. */
    char peer_sans[TETHER_TLS_INFO_STR_MAX];
    /** The key-exchange group, e.g. "X25519" or "prime256v1" (a static
     *  string); "" when the handshake used none, as a resumed TLS 1.2
     *  session does, or used one that only an OpenSSL provider defines. */
    const char *group;
    /** The string fields that were cut short: a bitwise OR of
     *  #tether_tls_info_field values, 0 when everything fit. */
    unsigned truncated;
} tether_tls_info;

/**
 * @brief Reads what a TLS connection negotiated; used through tether_conn_tls_info().
 * @param[in]  c    The connection.
 * @param[out] info Receives the details.
 * @param[in]  size `sizeof *info` as the caller's header defines it.
 * @return As tether_conn_tls_info().
 */
TETHER_API int tether_conn_tls_info_sized(const tether_conn *c, tether_tls_info *info, size_t size);

/**
 * @brief Reads what a TLS connection negotiated and who the peer is.
 *
 * Valid once the handshake has completed: from `on_connect` (status
 * #TETHER_OK) or `on_accept` on, until `on_close` returns. Loop thread only.
 * @param c    The connection (`const tether_conn *`).
 * @param info Pointer to a #tether_tls_info to fill.
 * @retval TETHER_OK       Filled.
 * @retval TETHER_EINVAL   A NULL argument.
 * @retval TETHER_ENOTSUP  Not a TLS connection.
 * @retval TETHER_ENOTCONN The handshake has not completed (yet), or the
 *                         connection has ended.
 */
#define tether_conn_tls_info(c, info) tether_conn_tls_info_sized((c), (info), sizeof(*(info)))

/** @brief Encodings of tether_conn_tls_peer_cert(). */
typedef enum tether_tls_cert_format {
    TETHER_TLS_CERT_DER = 0, /**< DER: the certificate's bytes as sent. */
    TETHER_TLS_CERT_PEM = 1, /**< PEM: "-----BEGIN CERTIFICATE-----" text, NUL-terminated. */
} tether_tls_cert_format;

/**
 * @brief Copies the peer's certificate, whole, into the caller's buffer.
 *
 * The certificate the peer presented (its own, not the chain), in DER or
 * PEM, for what #tether_tls_info does not hold: other extensions, the
 * public key, a pin (the SHA-256 of the DER). Ask for the size first with
 * a NULL buffer:
 * @code
 * size_t n = 0;
 * if (tether_conn_tls_peer_cert(c, TETHER_TLS_CERT_DER, NULL, 0, &n) == TETHER_EMSGSIZE) {
 *     uint8_t *der = malloc(n);
 *     tether_conn_tls_peer_cert(c, TETHER_TLS_CERT_DER, der, n, &n);
 * }
 * @endcode
 * Valid when tether_conn_tls_info() is. Loop thread only.
 * @param[in]  c       The connection.
 * @param[in]  format  #TETHER_TLS_CERT_DER or #TETHER_TLS_CERT_PEM.
 * @param[out] buf     Receives the certificate; may be NULL when @p cap is 0.
 * @param[in]  cap     Size of @p buf.
 * @param[out] out_len The bytes written (PEM: including its NUL); with
 *                     #TETHER_EMSGSIZE, the size @p buf needs.
 * @retval TETHER_OK       Copied; or *@p out_len is 0 because the peer
 *                         presented no certificate (a client without one,
 *                         see tether_tls_info::has_peer_cert).
 * @retval TETHER_EMSGSIZE @p buf is too small (or NULL); nothing was copied.
 * @retval TETHER_EINVAL   A NULL @p c or @p out_len, an unknown format, or
 *                         a NULL @p buf with @p cap > 0.
 * @retval TETHER_ENOTSUP  Not a TLS connection.
 * @retval TETHER_ENOTCONN The handshake has not completed (yet), or the
 *                         connection has ended.
 * @retval TETHER_ENOMEM   Out of memory.
 */
TETHER_API int tether_conn_tls_peer_cert(const tether_conn *c, tether_tls_cert_format format,
                                         void *buf, size_t cap, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_TLS_H */
/** @} */
