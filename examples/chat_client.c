/* SPDX-License-Identifier: MIT */
/* chat_client: talks to chat_server: sends the lines of stdin, prints the
 * lines of the room.
 *
 *   chat_client --connect tls://localhost:7000 --ca certs/ca.pem
 *               --cert certs/client.pem --key certs/client.key
 *               [--servername NAME] [--max-line BYTES]
 *
 * The server takes our nickname from the certificate (certs/client.pem is
 * "alice", certs/bob.pem is "bob"). Every line typed (or piped) on stdin is
 * sent; every line from the room is printed on stdout as it arrives:
 * `* welcome alice; here: bob`, `<bob> hi`, `* bob left`. At the end of
 * stdin (Ctrl-D, or the end of a pipe) the client sends what is still
 * queued, closes the connection gracefully and exits with 0. If the server
 * closes the connection first, or it cannot be established, it prints one
 * `error: ...` line on stderr and exits with 1.
 *
 * What it shows:
 * - feeding a loop from another thread: the event loop has no file
 *   watcher for stdin, and a blocking read must never run on the loop's
 *   thread. A reader thread reads lines and hands each one over with
 *   tether_loop_post(), the loop function that any thread may call;
 * - flow control end to end: lines go out with tether_conn_send() until it
 *   returns TETHER_EAGAIN and continue from `on_drain`; meanwhile the reader
 *   thread stops reading stdin once 64 KiB of lines are waiting, so piping
 *   a huge file in never grows memory without bound;
 * - a TLS client with a client certificate (mutual TLS), and line framing;
 * - a graceful close (tether_conn_close()) that still delivers everything
 *   that was queued. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */

/* Bytes of stdin lines handed to the loop and not yet accepted by
 * tether_conn_send(): above this the reader thread waits. */
#define STDIN_WINDOW (64 * 1024)

struct options {
    const char *connect_url;
    struct cli_tls tls;
    size_t max_line;
};

struct client;

/* A line from stdin, without its "\n". */
struct line {
    struct line *next;
    struct client *cl;
    size_t len;
    char data[];
};

struct client {
    const struct options *opt;
    tether_loop *loop;
    tether_conn *conn; /* NULL once its on_close has run */
    bool finished;     /* the outcome has been reported */
    bool closing;      /* tether_conn_close() has been called */
    int status;        /* exit status */
    /* Loop thread only: lines waiting to be sent, and whether stdin ended. */
    struct line *head, *tail;
    bool stdin_eof;
    /* Shared with the reader thread, under `lock`. */
    pthread_mutex_t lock;
    pthread_cond_t room; /* signalled when `inflight` falls or the loop goes */
    size_t inflight;
    bool loop_gone; /* no more tether_loop_post() */
};

static const char usage[] =
    "usage: chat_client --connect tls://HOST:PORT --ca PEM --cert PEM --key PEM\n"
    "Joins a chat_server room: sends the lines of stdin, prints the room's lines.\n"
    "Exits at the end of stdin, after everything typed has been sent.\n\n"
    "  --connect URL     the server, e.g. tls://localhost:7000\n" CLI_USAGE_TLS_CLIENT
    "                    (--cert: its common name is our nickname)\n"
    "  --max-line BYTES  longest line to send (default 4096, the server's "
    "default)\n" CLI_USAGE_COMMON;

static void finish(struct client *cl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports the outcome once and ends the connection: gracefully on success
 * (what is queued is still sent), at once on failure. */
static void finish(struct client *cl, int status, const char *fmt, ...)
{
    if (cl->finished) {
        return;
    }
    cl->finished = true;
    cl->status = status;
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    if (status != 0) {
        tether_conn_abort(cl->conn); /* NULL (already closed) is ignored */
    }
}

/* The loop has taken `len` bytes off the reader's window. */
static void window_release(struct client *cl, size_t len)
{
    pthread_mutex_lock(&cl->lock);
    cl->inflight -= len;
    pthread_cond_signal(&cl->room);
    pthread_mutex_unlock(&cl->lock);
}

/* Sends waiting lines until the queue is full (on_drain calls again), then
 * closes once stdin has ended and every line has been queued. */
static void pump(struct client *cl)
{
    while (cl->head != NULL && cl->conn != NULL && !cl->finished) {
        struct line *ln = cl->head;
        /* The server would close the connection on a line above its limit. */
        int rv = ln->len > cl->opt->max_line ? TETHER_EMSGSIZE
                                             : tether_conn_send(cl->conn, ln->data, ln->len);
        if (rv == TETHER_EAGAIN || rv == TETHER_ECLOSED) {
            return; /* on_drain resumes; or on_close is on its way */
        }
        if (rv == TETHER_EMSGSIZE) {
            fprintf(stderr, "chat_client: a %zu-byte line is longer than --max-line; not sent\n",
                    ln->len);
        } else if (rv != TETHER_OK) {
            finish(cl, 1, "error: cannot send: %s\n", tether_strerror(rv));
            return;
        }
        cl->head = ln->next;
        if (cl->head == NULL) {
            cl->tail = NULL;
        }
        window_release(cl, ln->len);
        free(ln);
    }
    if (cl->head == NULL && cl->stdin_eof && !cl->closing && cl->conn != NULL) {
        cl->closing = true;
        tether_conn_close(cl->conn); /* sends the queue, then on_close(TETHER_OK) */
    }
}

/* ---- the reader thread and what it posts to the loop ------------------------ */

/* Loop thread: a line from the reader. */
static void on_stdin_line(tether_loop *loop, void *ud)
{
    (void)loop;
    struct line *ln = ud;
    struct client *cl = ln->cl;
    if (cl->finished || cl->conn == NULL) {
        window_release(cl, ln->len);
        free(ln);
        return;
    }
    ln->next = NULL;
    if (cl->tail != NULL) {
        cl->tail->next = ln;
    } else {
        cl->head = ln;
    }
    cl->tail = ln;
    pump(cl);
}

/* Loop thread: stdin has ended. */
static void on_stdin_eof(tether_loop *loop, void *ud)
{
    (void)loop;
    struct client *cl = ud;
    cl->stdin_eof = true;
    pump(cl);
}

static void *reader_thread(void *arg)
{
    struct client *cl = arg;
    char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        ssize_t n = getline(&buf, &cap, stdin);
        struct line *ln = NULL;
        if (n > 0) {
            size_t len = (size_t)n;
            if (buf[len - 1] == '\n') {
                len--;
            }
            ln = malloc(sizeof *ln + len);
            if (ln != NULL) {
                ln->cl = cl;
                ln->len = len;
                memcpy(ln->data, buf, len);
            }
        }
        pthread_mutex_lock(&cl->lock);
        while (ln != NULL && !cl->loop_gone && cl->inflight >= STDIN_WINDOW) {
            pthread_cond_wait(&cl->room, &cl->lock);
        }
        bool posted = false;
        if (!cl->loop_gone) {
            if (ln != NULL) {
                posted = tether_loop_post(cl->loop, on_stdin_line, ln) == TETHER_OK;
                cl->inflight += posted ? ln->len : 0;
            } else {
                /* End of input, a read error or no memory: finish up. */
                tether_loop_post(cl->loop, on_stdin_eof, cl);
            }
        }
        bool stop = cl->loop_gone || ln == NULL || !posted;
        pthread_mutex_unlock(&cl->lock);
        if (!posted) {
            free(ln);
        }
        if (stop) {
            break;
        }
    }
    free(buf);
    return NULL;
}

/* ---- connection callbacks ------------------------------------------------------ */

static void on_connect(tether_conn *c, int status, void *ud)
{
    struct client *cl = ud;
    if (status != TETHER_OK) {
        /* e.g. "connect to tls://localhost:7000: certificate verify failed: ..." */
        const char *detail = tether_conn_last_error(c);
        finish(cl, 1, "error: %s\n", detail[0] != '\0' ? detail : tether_strerror(status));
        return;
    }
    /* Only now start reading stdin: nothing typed is queued for a
     * connection that might never come up. The thread is detached: it may
     * sit in a read from a terminal when we exit. */
    pthread_t tid;
    if (pthread_create(&tid, NULL, reader_thread, cl) != 0) {
        finish(cl, 1, "error: cannot start the stdin thread\n");
        return;
    }
    pthread_detach(tid);
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c, (void)ud;
    /* data is borrowed: print it now. stdout is line-buffered. */
    fwrite(data, 1, len, stdout);
    putchar('\n');
}

static void on_drain(tether_conn *c, void *ud)
{
    (void)c;
    pump(ud);
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct client *cl = ud;
    if (reason == TETHER_OK && cl->closing) {
        finish(cl, 0, NULL); /* our graceful close: everything was sent */
    } else {
        const char *detail = tether_conn_last_error(c);
        finish(cl, 1, "error: disconnected: %s\n",
               detail[0] != '\0' ? detail : tether_strerror(reason));
    }
    cl->conn = NULL; /* freed when this returns */
}

/* ---- options ---------------------------------------------------------------------- */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_CONNECT = 256,
        OPT_MAX_LINE
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        CLI_LONGOPTS_TLS_CLIENT,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* cli_option() reports problems, in one line */
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        switch (ch) {
        case OPT_CONNECT:
            opt->connect_url = optarg;
            break;
        case OPT_MAX_LINE:
            if (!cli_parse_size(optarg, &opt->max_line) || opt->max_line == 0 ||
                opt->max_line > 1024 * 1024) {
                r = cli_bad_value("max-line", optarg, "a number of bytes from 1 to 1048576");
            }
            break;
        default:
            r = cli_option("chat_client", usage, ch, argv, &opt->tls);
            break;
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? -1 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (opt->connect_url == NULL) {
        fprintf(stderr, "error: --connect URL is required (see --help)\n");
        return 1;
    }
    if (strncmp(opt->connect_url, "tls://", 6) != 0 &&
        strncmp(opt->connect_url, "tls+srv://", 10) != 0) {
        fprintf(stderr, "error: --connect must be a tls:// or tls+srv:// URL: chat_server only "
                        "speaks TLS\n");
        return 1;
    }
    return 0;
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    struct options opt = {.max_line = 4096};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line as it arrives, also into a pipe */

    static struct client cl; /* static: the reader thread may outlive main's frame */
    cl.opt = &opt;
    pthread_mutex_init(&cl.lock, NULL);
    pthread_cond_init(&cl.room, NULL);
    rv = tether_loop_new(&cl.loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loop: %s\n", tether_strerror(rv));
        return 1;
    }

    /* TLS: --ca, --cert and --key become a tether_tls_config (see
     * common/cli.c); NULL without flags: the system's trust store. */
    tether_tls_config *tls;
    tether_error err;
    if (!cli_tls_client(&opt.tls, opt.connect_url, &tls)) {
        tether_loop_free(cl.loop);
        return 1;
    }

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = &cl;
    co.framing = TETHER_FRAMING_LINE;
    /* The limit for received lines; they are ours plus a nickname. */
    co.max_msg = opt.max_line + 1024;
    co.on_connect = on_connect;
    co.on_message = on_message;
    co.on_drain = on_drain;
    co.on_close = on_close;
    co.tls = tls;
    rv = tether_conn_dial(&cl.conn, cl.loop, opt.connect_url, &co, &err);
    tether_tls_config_unref(tls);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        tether_loop_free(cl.loop);
        return 1;
    }
    /* Runs until the connection has closed. */
    rv = tether_loop_run(cl.loop);
    if (rv != TETHER_OK && !cl.finished) {
        fprintf(stderr, "error: the event loop failed: %s\n", tether_strerror(rv));
        cl.status = 1;
    }

    /* The reader thread must not post to a loop that is being freed: tell
     * it, then run what it posted before it knew. */
    pthread_mutex_lock(&cl.lock);
    cl.loop_gone = true;
    pthread_cond_signal(&cl.room);
    pthread_mutex_unlock(&cl.lock);
    while (tether_loop_run_once(cl.loop, 0) > 0) {
    }
    while (cl.head != NULL) {
        struct line *ln = cl.head;
        cl.head = ln->next;
        free(ln);
    }
    tether_loop_free(cl.loop);
    fflush(stdout);
    return cl.status;
}
