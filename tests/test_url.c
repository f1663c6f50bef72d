/* SPDX-License-Identifier: MIT */
/* URL parsing: every accepted form, and a message naming the problem for
 * every malformed one. */
#include <string.h>

#include "helpers.h"
#include "url.h"

START_TEST(accepts_valid_urls)
{
    struct tether__url u;
    tether_error err;
    ck_assert_int_eq(tether__url_parse("tcp://127.0.0.1:5555", false, &u, &err), TETHER_OK);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_TCP);
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 5555);

    ck_assert_int_eq(tether__url_parse("tls://example.com:443", false, &u, &err), TETHER_OK);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_TLS);
    ck_assert_str_eq(u.host, "example.com");
    ck_assert_int_eq(u.port, 443);

    ck_assert_int_eq(tether__url_parse("tcp://[::1]:80", false, &u, &err), TETHER_OK);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 80);

    ck_assert_int_eq(tether__url_parse("tcp://*:0", true, &u, &err), TETHER_OK);
    ck_assert(u.wildcard);
    ck_assert_int_eq(u.port, 0);

    ck_assert_int_eq(tether__url_parse("unix:///tmp/x.sock", false, &u, &err), TETHER_OK);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_UNIX);
    ck_assert_str_eq(u.path, "/tmp/x.sock");

    ck_assert_int_eq(tether__url_parse("unix://@abstract", false, &u, &err), TETHER_OK);
    ck_assert_int_eq(u.path[0], '\0');
    ck_assert_int_eq((int)u.path_len, 9);
    ck_assert(memcmp(u.path + 1, "abstract", 8) == 0);
    ck_assert(!u.srv);
}
END_TEST

START_TEST(accepts_srv_urls)
{
    struct tether__url u;
    tether_error err;
    ck_assert_int_eq(tether__url_parse("tcp+srv://_chat._tcp.example.com", false, &u, &err),
                     TETHER_OK);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_TCP);
    ck_assert(u.srv);
    ck_assert_str_eq(u.host, "_chat._tcp.example.com");
    ck_assert_int_eq(u.port, 0);

    ck_assert_int_eq(tether__url_parse("tls+srv://_x._tcp.test.", false, &u, &err), TETHER_OK);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_TLS);
    ck_assert(u.srv);
    ck_assert_str_eq(u.host, "_x._tcp.test.");

    ck_assert_int_eq(tether__url_parse("tcp://host:1", false, &u, &err), TETHER_OK);
    ck_assert(!u.srv);
}
END_TEST

struct bad_case {
    const char *url;
    bool listen;
    const char *must_contain;
};

static const struct bad_case bad[] = {
    {"127.0.0.1:80", false, "missing scheme"},
    {"udp://1.2.3.4:5", false, "unknown scheme 'udp'"},
    {"tcp://", false, "missing host and port"},
    {"tcp://host", false, "missing port"},
    {"tcp://host:", false, "missing port"},
    {"tcp://:80", false, "missing host"},
    {"tcp://host:http", false, "not a number"},
    {"tcp://host:70000", false, "out of range"},
    {"tcp://host:0", false, "port 0 is only valid for listening"},
    {"tcp://host:80/path", false, "unexpected path"},
    {"tcp://[::1:80", false, "unterminated"},
    {"tcp://[::1]", false, "missing port"},
    {"tcp://[zz]:80", false, "not an IPv6 address"},
    {"tcp://::1:80", false, "must be in brackets"},
    {"tcp://bad host:80", false, "invalid character"},
    {"tcp://a..b:80", false, "empty label"},
    {"tcp://.a:80", false, "empty label"},
    {"tcp://a12345678901234567890123456789012345678901234567890123456789012345.b:80", false,
     "over 63 characters"},
    {"tcp://*:80", false, "only valid for listening"},
    {"unix://relative/path", false, "absolute path"},
    {"unix://@", false, "empty abstract"},
    {"unix:///"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaa",
     false, "too long"},
    {"tcp+srv://", false, "missing SRV name"},
    {"tcp+srv://_svc._tcp.test:80", false, "takes no port"},
    {"tls+srv://[::1]", false, "takes no port"},
    {"tcp+srv://_svc._tcp.test/x", false, "unexpected path '/x'"},
    {"tcp+srv://svc.tcp.test", false, "must have the form _service._proto.domain"},
    {"tcp+srv://_svc.tcp.test", false, "must have the form _service._proto.domain"},
    {"tcp+srv://_._tcp.test", false, "must have the form _service._proto.domain"},
    {"tcp+srv://_svc._.test", false, "must have the form _service._proto.domain"},
    {"tcp+srv://_svc._tcp", false, "must have the form _service._proto.domain"},
    {"tcp+srv://_svc._tcp.", false, "must have the form _service._proto.domain"},
    {"tcp+srv://_svc._tcp..test", false, "empty label"},
    {"tcp+srv://_svc._tcp.bad name", false, "invalid character"},
    {"tcp+srv://_svc._tcp.test", true, "SRV URLs are for dialling only"},
    {"udp+srv://_svc._udp.test", false, "unknown scheme 'udp+srv'"},
};

START_TEST(rejects_malformed_urls_with_reason)
{
    const struct bad_case *bc = &bad[_i];
    struct tether__url u;
    tether_error err;
    memset(&err, 0, sizeof err);
    int rv = tether__url_parse(bc->url, bc->listen, &u, &err);
    ck_assert_int_eq(rv, TETHER_EINVAL);
    ck_assert_int_eq(err.code, TETHER_EINVAL);
    ck_assert_msg(strstr(err.message, bc->must_contain) != NULL, "'%s' gave '%s', wanted '%s'",
                  bc->url, err.message, bc->must_contain);
    ck_assert_msg(strstr(err.message, "invalid URL") != NULL, "message does not say invalid URL");
}
END_TEST

START_TEST(null_url)
{
    struct tether__url u;
    tether_error err;
    ck_assert_int_eq(tether__url_parse(NULL, false, &u, &err), TETHER_EINVAL);
    ck_assert_str_eq(err.message, "URL is NULL");
}
END_TEST

START_TEST(dial_and_listen_report_url_errors)
{
    tether_conn *c = (tether_conn *)1;
    tether_error err;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://host", NULL, &err), TETHER_EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err.message, "missing port"));
    tether_listener *l = (tether_listener *)1;
    ck_assert_int_eq(tether_listen(&l, th_loop, "ftp://x:1", NULL, &err), TETHER_EINVAL);
    ck_assert_ptr_null(l);
    ck_assert_ptr_nonnull(strstr(err.message, "unknown scheme 'ftp'"));
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp+srv://_s._tcp.test", NULL, &err),
                     TETHER_EINVAL);
    ck_assert_ptr_null(l);
    ck_assert_ptr_nonnull(strstr(err.message, "for dialling only"));
    /* No error record is fine too. */
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "nonsense", NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_dial(NULL, th_loop, "tcp://a:1", NULL, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_dial(&c, NULL, "tcp://a:1", NULL, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, NULL, NULL, &err), TETHER_EINVAL);
}
END_TEST

START_TEST(error_strings)
{
    ck_assert_str_eq(tether_err_name(TETHER_OK), "TETHER_OK");
    ck_assert_str_eq(tether_err_name(TETHER_EMSGSIZE), "TETHER_EMSGSIZE");
    ck_assert_str_eq(tether_err_name(TETHER_EDNSTIMEDOUT), "TETHER_EDNSTIMEDOUT");
    ck_assert_str_eq(tether_err_name(-9999), "TETHER_E?");
    ck_assert_str_eq(tether_err_name(5), "TETHER_E?");
    ck_assert_str_eq(tether_strerror(TETHER_ECONNREFUSED), "connection refused");
    ck_assert_str_eq(tether_strerror(-9999), "unknown error");
    /* Every code has its own name and message. */
    for (int e = TETHER_EDNSTIMEDOUT; e < 0; e++) {
        ck_assert_str_ne(tether_err_name(e), "TETHER_E?");
        for (int f = e + 1; f < 0; f++) {
            ck_assert_str_ne(tether_strerror(e), tether_strerror(f));
        }
    }
    ck_assert_str_eq(tether_version(), TETHER_VERSION_STRING);
}
END_TEST

static Suite *url_suite(void)
{
    Suite *s = suite_create("url");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_add_test(tc, accepts_valid_urls);
    tcase_add_test(tc, accepts_srv_urls);
    tcase_add_loop_test(tc, rejects_malformed_urls_with_reason, 0,
                        (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, null_url);
    tcase_add_test(tc, dial_and_listen_report_url_errors);
    tcase_add_test(tc, error_strings);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(url_suite());
}
