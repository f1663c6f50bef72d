/* sync_client: the blocking API in about thirty lines: connect with a
 * timeout, send one message, receive one, close.
 *
 *   sync_client URL MESSAGE [--ca PEM] [--timeout MS]
 *   sync_client tls://localhost:7000 "hello" --ca certs/ca.pem
 *
 * Against echo_server it prints MESSAGE, the echo, and exits with 0. Any
 * failure is one `error: ...` line on stderr (e.g. `error: connect to
 * tcp://127.0.0.1:9: connection refused`, `error: no message within 5000
 * ms`) and exit status 1. Every call waits at most --timeout milliseconds
 * (default 5000): a blocking call that can hang forever is a bug.
 *
 * No event loop, no callbacks: each tether_sync_* call runs a private loop
 * until its work is done or its deadline passes, like Python's socket
 * module, but with whole messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

static const char usage[] =
    "usage: sync_client URL MESSAGE [--ca PEM] [--timeout MS]\n"
    "Sends MESSAGE to an echo server with the blocking API and prints the reply.\n\n"
    "  URL           tcp://HOST:PORT, tls://HOST:PORT or unix:///path\n"
    "  --ca PEM      CA certificates to trust for tls:// (default: the system's)\n"
    "  --timeout MS  how long each step may take (default 5000)\n"
    "  --help        show this help\n";

int main(int argc, char **argv)
{
    const char *url = NULL, *message = NULL, *ca = NULL;
    int timeout_ms = 5000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc) {
            ca = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout_ms = atoi(argv[++i]);
        } else if (url == NULL) {
            url = argv[i];
        } else if (message == NULL) {
            message = argv[i];
        } else {
            fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", argv[i]);
            return 1;
        }
    }
    if (url == NULL || message == NULL || timeout_ms <= 0) {
        fprintf(stderr, "error: URL and MESSAGE are required, --timeout must be > 0 "
                        "(see --help)\n");
        return 1;
    }

    /* ---- the blocking API ---- */
    tether_error err;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.ca_file = ca; /* NULL: the system's trust store */
    if (ca != NULL && tether_tls_config_new(&co.tls, &to, &err) != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    tether_sync *s;
    int rv = tether_sync_connect(&s, url, &co, timeout_ms, &err);
    tether_tls_config_unref(co.tls); /* the connection keeps its own reference */
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    tether_msg reply;
    rv = tether_sync_send(s, message, strlen(message), timeout_ms);
    if (rv == TETHER_OK) {
        rv = tether_sync_recv(s, &reply, timeout_ms);
    }
    if (rv != TETHER_OK) {
        const char *detail = tether_sync_last_error(s);
        fprintf(stderr, "error: %s\n", detail[0] != '\0' ? detail : tether_strerror(rv));
        tether_sync_close(s);
        return 1;
    }
    printf("%.*s\n", (int)reply.len, (const char *)reply.data);
    tether_msg_free(&reply);
    return tether_sync_close(s) == TETHER_OK ? 0 : 1;
}
