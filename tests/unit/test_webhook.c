/*
 * Unit tests for the outgoing webhooks (src/server/webhook.c) and the webhook
 * hub connector (src/server/hub_webhook.c), against the real test webhook
 * server tests/system/lib/webhook_server.py started as two child processes on
 * 127.0.0.1 (ports chosen by the kernel): one plain HTTP, one HTTPS with a
 * CA and server certificate made with the openssl CLI in a temp dir. The
 * server logs every request it gets, so the tests check what went on the wire
 * (path with the query, headers, body) as well as each failure's code and
 * one-line reason: 400 text, timeout, connection refused, bad JSON, missing
 * iotHubHostName, unlinked hub, oversized answer, redirect, untrusted and
 * trusted TLS, bad URLs, and that a URL's ?code= key never reaches err or the
 * log.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "src/common/errors.h"
#include "src/server/hub.h"
#include "src/server/webhook.h"

#ifndef PROVD_SRC_DIR
#define PROVD_SRC_DIR "."
#endif

#define SECRET "c2VjcmV0LWZ1bmN0aW9uLWtleQ"
#define ALLOC_WHAT "custom allocation webhook"

static char tmp_dir[256];
static char plain_log[300], tls_log[300], ca_pem[300];
static pid_t plain_pid = -1, tls_pid = -1;
static int plain_port, tls_port;

/* ---- fixtures -------------------------------------------------------------- */

static const char *server_script(void)
{
    const char *env = getenv("WEBHOOK_SERVER_PY");

    return env ? env : PROVD_SRC_DIR "/tests/system/lib/webhook_server.py";
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd) == 0 ? 0 : -1;
}

/* A test CA and a server certificate for IP 127.0.0.1, with the openssl CLI. */
static int make_pki(void)
{
    return run("cd %s && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
               "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
               "-keyout ca.key -out ca.pem -days 2 -subj /CN=webhook-test-ca 2>/dev/null && "
               "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key "
               "-out srv.csr -subj /CN=127.0.0.1 2>/dev/null && "
               "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
               "-days 2 -extfile san.ext -out srv.pem 2>/dev/null && "
               "printf 'not a certificate\\n' > junk.pem",
               tmp_dir);
}

/* Starts webhook_server.py; returns its pid and the port it printed, or -1. */
static pid_t start_server(const char *log, bool tls, int *port)
{
    char cert[300], key[300], line[128] = "";
    const char *argv[16];
    struct pollfd pfd;
    int fds[2], n = 0;
    size_t len = 0;
    pid_t pid;

    snprintf(cert, sizeof(cert), "%s/srv.pem", tmp_dir);
    snprintf(key, sizeof(key), "%s/srv.key", tmp_dir);
    argv[n++] = "python3";
    argv[n++] = server_script();
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--log";
    argv[n++] = log;
    argv[n++] = "--delay";
    argv[n++] = "30";
    if (tls) {
        argv[n++] = "--tls-cert";
        argv[n++] = cert;
        argv[n++] = "--tls-key";
        argv[n++] = key;
    }
    argv[n] = NULL;
    if (pipe(fds) != 0)
        return -1;
    if ((pid = fork()) == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (pid > 0 && strchr(line, '\n') == NULL && len < sizeof(line) - 1 &&
           poll(&pfd, 1, 10000) == 1) {
        ssize_t got = read(fds[0], line + len, sizeof(line) - 1 - len);

        if (got <= 0)
            break;
        len += (size_t)got;
        line[len] = '\0';
    }
    close(fds[0]);
    if (pid > 0 && sscanf(line, "LISTEN 127.0.0.1:%d", port) != 1) {
        fprintf(stderr, "webhook_server.py (%s) did not start: '%s'\n", server_script(), line);
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

static int setup(void **state)
{
    char err[256];

    (void)state;
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/test_webhook.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmp_dir) == NULL || make_pki() != 0)
        return -1;
    snprintf(plain_log, sizeof(plain_log), "%s/plain.log", tmp_dir);
    snprintf(tls_log, sizeof(tls_log), "%s/tls.log", tmp_dir);
    snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", tmp_dir);
    if (webhook_global_init() != 0 || webhook_set_ca_file(NULL, err, sizeof(err)) != 0)
        return -1;
    plain_pid = start_server(plain_log, false, &plain_port);
    tls_pid = start_server(tls_log, true, &tls_port);
    return plain_pid > 0 && tls_pid > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++) {
        pid_t pid = i == 0 ? plain_pid : tls_pid;

        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
    }
    webhook_global_cleanup();
    if (getenv("TEST_WEBHOOK_KEEP") == NULL)
        run("rm -rf %s", tmp_dir);
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

static void url_for(char *out, size_t len, const char *mode)
{
    snprintf(out, len, "http://127.0.0.1:%d/%s?code=" SECRET, plain_port, mode);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Number of lines in a server log, and the last one parsed. */
static int log_lines(const char *path, json_t **last)
{
    static char line[256 * 1024], prev[256 * 1024];
    FILE *f = fopen(path, "r");
    int n = 0;

    prev[0] = '\0';
    if (last != NULL)
        *last = NULL;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        memcpy(prev, line, strlen(line) + 1);
    }
    fclose(f);
    if (last != NULL && n > 0)
        *last = json_loads(prev, 0, NULL);
    return n;
}

/* An AllocationRequest as the lead's pipeline builds it (§9.4). */
static json_t *alloc_request(json_t *payload)
{
    json_t *req = json_pack("{s:{s:s, s:{}}, s:[s, s], s:{s:s, s:{s:s}}}", "deviceRuntimeContext",
                            "registrationId", "dev-1", "symmetricKey", "linkedHubs",
                            "hubA.example.test", "hubB.example.test", "individualEnrollment",
                            "registrationId", "dev-1", "attestation", "type", "symmetricKey");

    assert_non_null(req);
    if (payload != NULL)
        json_object_set_new(json_object_get(req, "deviceRuntimeContext"), "payload", payload);
    return req;
}

/* Calls the custom allocation webhook in mode with a default request. */
static int call_mode(const char *mode, long timeout_ms, json_t **answer, char *err, size_t errlen)
{
    char url[256];
    json_t *req = alloc_request(json_pack("{s:i}", "temperature", 21));
    int r;

    url_for(url, sizeof(url), mode);
    r = custom_allocation_call(url, timeout_ms, req, answer, err, errlen);
    json_decref(req);
    assert_null(strstr(err, SECRET));
    return r;
}

/* ---- custom allocation ------------------------------------------------------ */

static void test_allocation_success(void **state)
{
    char url[256], err[512] = "x";
    json_t *payload = json_pack("{s:i, s:s}", "temperature", 21, "hub", "hubB.example.test");
    json_t *req = alloc_request(json_deep_copy(payload));
    json_t *ans = NULL, *logged;
    int before = log_lines(plain_log, NULL);

    (void)state;
    url_for(url, sizeof(url), "allocate-first");
    assert_int_equal(custom_allocation_call(url, 5000, req, &ans, err, sizeof(err)), 0);
    assert_non_null(ans);
    assert_string_equal(json_string_value(json_object_get(ans, "iotHubHostName")),
                        "hubA.example.test");
    assert_true(json_is_object(json_object_get(ans, "initialTwin")));
    assert_true(json_is_true(json_object_get(json_object_get(ans, "payload"), "fromWebhook")));
    assert_true(json_equal(json_object_get(json_object_get(ans, "payload"), "echo"), payload));

    /* what went on the wire */
    assert_int_equal(log_lines(plain_log, &logged), before + 1);
    assert_non_null(logged);
    assert_string_equal(json_string_value(json_object_get(logged, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(logged, "path")),
                        "/allocate-first?code=" SECRET);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(logged, "headers"), "content-type")),
        "application/json");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(logged, "headers"), "accept")),
        "application/json");
    assert_null(json_object_get(json_object_get(logged, "headers"), "expect"));
    assert_memory_equal(
        json_string_value(json_object_get(json_object_get(logged, "headers"), "user-agent")),
        "provd/", 6);
    assert_true(json_equal(json_object_get(logged, "body"), req));
    json_decref(logged);
    json_decref(ans);

    /* the hub named by the device's payload */
    url_for(url, sizeof(url), "allocate-by-payload");
    assert_int_equal(custom_allocation_call(url, 5000, req, &ans, err, sizeof(err)), 0);
    assert_string_equal(json_string_value(json_object_get(ans, "iotHubHostName")),
                        "hubB.example.test");
    json_decref(ans);
    json_decref(payload);
    json_decref(req);
}

static void test_allocation_400_text(void **state)
{
    char err[512];
    json_t *ans = (json_t *)1;

    (void)state;
    assert_int_equal(call_mode("fail", 5000, &ans, err, sizeof(err)), PROV_EPROTO);
    assert_null(ans);
    assert_string_equal(err, ALLOC_WHAT " answered 400: cannot place this device");
}

static void test_allocation_timeout(void **state)
{
    char err[512];
    json_t *ans = NULL;
    double t0 = now_s(), dt;

    (void)state;
    assert_int_equal(call_mode("slow", 1000, &ans, err, sizeof(err)), PROV_ETIMEOUT);
    dt = now_s() - t0;
    assert_null(ans);
    assert_true(dt >= 0.9);
    assert_true(dt < 2.0); /* timeout + 1 s */
    assert_string_equal(err, ALLOC_WHAT " timed out after 1000 ms");
}

static void test_allocation_connect_refused(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    char url[256], err[512];
    json_t *req = alloc_request(NULL), *ans = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    (void)state;
    /* a port that was free a moment ago: nothing listens there */
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x?code=" SECRET, ntohs(sa.sin_port));
    assert_int_equal(custom_allocation_call(url, 3000, req, &ans, err, sizeof(err)), PROV_EIO);
    assert_null(ans);
    assert_string_equal(err, ALLOC_WHAT " could not connect: Connection refused");
    json_decref(req);
}

static void test_allocation_bad_answers(void **state)
{
    static const struct {
        const char *mode;
        int code;
        const char *err;
    } cases[] = {
        {"badjson", PROV_EPROTO, ALLOC_WHAT " answer is not valid JSON: "},
        {"notobject", PROV_EPROTO, ALLOC_WHAT " answer is not a JSON object"},
        {"nohub", PROV_EPROTO, ALLOC_WHAT " answer has no iotHubHostName"},
        {"allocate-unlinked", PROV_EPROTO,
         ALLOC_WHAT " chose hub not-linked.example.test, which is not among linkedHubs"},
        {"big", PROV_ELIMIT, ALLOC_WHAT " answer is larger than 64 KB"},
        {"empty", PROV_EPROTO, ALLOC_WHAT " answered 200 without a body"},
        {"hub-fail", PROV_EPROTO, ALLOC_WHAT " answered 500: hub refused the identity"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512];
        json_t *ans = (json_t *)1;

        print_message("mode %s\n", cases[i].mode);
        assert_int_equal(call_mode(cases[i].mode, 5000, &ans, err, sizeof(err)), cases[i].code);
        assert_null(ans);
        assert_memory_equal(err, cases[i].err, strlen(cases[i].err));
        if (cases[i].err[strlen(cases[i].err) - 1] != ' ')
            assert_string_equal(err, cases[i].err);
    }
}

static void test_allocation_redirect_not_followed(void **state)
{
    char err[512];
    json_t *ans = NULL;
    int before = log_lines(plain_log, NULL);

    (void)state;
    assert_int_equal(call_mode("redirect", 5000, &ans, err, sizeof(err)), PROV_EPROTO);
    assert_string_equal(err, ALLOC_WHAT " answered 302");
    assert_int_equal(log_lines(plain_log, NULL), before + 1); /* Location not visited */
}

/* A slow webhook holds up neither another thread's call nor the server. */
struct slow_call {
    int r;
    char err[512];
};

static void *slow_thread(void *arg)
{
    struct slow_call *c = arg;
    json_t *ans = NULL;

    c->r = call_mode("slow", 3000, &ans, c->err, sizeof(c->err));
    json_decref(ans);
    return NULL;
}

static void test_allocation_concurrent(void **state)
{
    struct slow_call c = {0};
    pthread_t th;
    char err[512];
    json_t *ans = NULL;
    double t0;

    (void)state;
    assert_int_equal(pthread_create(&th, NULL, slow_thread, &c), 0);
    usleep(200 * 1000);
    t0 = now_s();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(call_mode("allocate-first", 5000, &ans, err, sizeof(err)), 0);
        json_decref(ans);
    }
    assert_true(now_s() - t0 < 2.0);
    pthread_join(th, NULL);
    assert_int_equal(c.r, PROV_ETIMEOUT);
}

/* ---- TLS -------------------------------------------------------------------- */

static int https_call(const char *host, char *err, size_t errlen)
{
    char url[256];
    json_t *req = alloc_request(NULL), *ans = NULL;
    int r;

    snprintf(url, sizeof(url), "https://%s:%d/allocate-first?code=" SECRET, host, tls_port);
    r = custom_allocation_call(url, 5000, req, &ans, err, errlen);
    if (r == 0)
        assert_string_equal(json_string_value(json_object_get(ans, "iotHubHostName")),
                            "hubA.example.test");
    else
        assert_null(ans);
    assert_null(strstr(err, SECRET));
    json_decref(ans);
    json_decref(req);
    return r;
}

static void test_https(void **state)
{
    char err[512], junk[300];
    int before;

    (void)state;
    /* the test CA is not in the system store */
    before = log_lines(tls_log, NULL);
    assert_int_equal(https_call("127.0.0.1", err, sizeof(err)), PROV_ETLS);
    assert_memory_equal(err, ALLOC_WHAT " TLS failed: ", strlen(ALLOC_WHAT " TLS failed: "));
    assert_int_equal(log_lines(tls_log, NULL), before);

    /* --webhook-ca */
    assert_int_equal(webhook_set_ca_file(ca_pem, err, sizeof(err)), 0);
    assert_int_equal(https_call("127.0.0.1", err, sizeof(err)), 0);
    assert_int_equal(log_lines(tls_log, NULL), before + 1);

    /* trusted chain, wrong name: the certificate names IP 127.0.0.1 only */
    assert_int_equal(https_call("localhost", err, sizeof(err)), PROV_ETLS);

    /* bad CA files leave nothing trusted */
    snprintf(junk, sizeof(junk), "%s/junk.pem", tmp_dir);
    assert_int_equal(webhook_set_ca_file(junk, err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "holds no PEM certificate"));
    assert_int_equal(https_call("127.0.0.1", err, sizeof(err)), PROV_ETLS);
    assert_int_equal(webhook_set_ca_file("/nonexistent/ca.pem", err, sizeof(err)), PROV_EINVAL);
    assert_non_null(strstr(err, "cannot be read"));
    assert_int_equal(webhook_set_ca_file(NULL, err, sizeof(err)), 0);
}

/* ---- URLs, excerpts, secrets --------------------------------------------------- */

static void test_bad_urls(void **state)
{
    static const char *const bad[] = {"ftp://127.0.0.1/x", "127.0.0.1:8080/x",       "https://",
                                      "http://a b/",       "mosquitto://u:p@h:1883", ""};
    json_t *body = json_object(), *resp = (json_t *)1;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(webhook_url_check(bad[i]), PROV_EINVAL);
        assert_int_equal(
            webhook_post_json("x webhook", bad[i], body, 1000, NULL, &resp, err, sizeof(err)),
            PROV_EINVAL);
        assert_string_equal(err, "x webhook URL is not a valid http(s) URL");
        assert_null(resp);
    }
    assert_int_equal(webhook_url_check("HTTPS://Example.NET:8443/api?code=x"), 0);
    assert_int_equal(webhook_post_json("x webhook", "http://127.0.0.1:1/", body, 0, NULL, NULL, err,
                                       sizeof(err)),
                     PROV_EINVAL);
    json_decref(body);
}

static void test_url_origin(void **state)
{
    char o[128];

    (void)state;
    webhook_url_origin("https://user:pw@alloc.example.net:8443/api/fn?code=abc#f", o, sizeof(o));
    assert_string_equal(o, "https://alloc.example.net:8443");
    webhook_url_origin("http://127.0.0.1/x?code=abc", o, sizeof(o));
    assert_string_equal(o, "http://127.0.0.1");
    webhook_url_origin("::", o, sizeof(o));
    assert_string_equal(o, "(invalid URL)");
}

static void test_excerpt(void **state)
{
    char out[WEBHOOK_EXCERPT_MAX + 1], big[1000];

    (void)state;
    webhook_excerpt("line one\r\n\tline\x01two  \n", 22, out, 200);
    assert_string_equal(out, "line one line two");
    webhook_excerpt("bad \xff\xc0\x80 ok", 11, out, 200);
    assert_string_equal(out, "bad ??? ok");
    webhook_excerpt("caf\xc3\xa9 \xe2\x82\xac", 9, out, 200);
    assert_string_equal(out, "caf\xc3\xa9 \xe2\x82\xac");
    webhook_excerpt("ab\xe2\x82\xac", 5, out, 4); /* no split character */
    assert_string_equal(out, "ab");
    webhook_excerpt("\xed\xa0\x80", 3, out, 200); /* a surrogate is not UTF-8 */
    assert_string_equal(out, "???");
    memset(big, 'x', sizeof(big));
    webhook_excerpt(big, sizeof(big), out, WEBHOOK_EXCERPT_MAX);
    assert_int_equal(strlen(out), WEBHOOK_EXCERPT_MAX);
}

/* Failure lines on stderr name scheme://host:port only, never the ?code= key. */
static void test_no_secret_in_log(void **state)
{
    char path[300], url[256], err[512], text[4096], origin[64];
    json_t *req = alloc_request(NULL), *ans = NULL;
    int saved = dup(STDERR_FILENO), fd;
    FILE *f;
    size_t n;

    (void)state;
    snprintf(path, sizeof(path), "%s/stderr.txt", tmp_dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    url_for(url, sizeof(url), "fail");
    assert_int_equal(custom_allocation_call(url, 5000, req, &ans, err, sizeof(err)), PROV_EPROTO);
    url_for(url, sizeof(url), "nohub");
    assert_int_equal(custom_allocation_call(url, 5000, req, &ans, err, sizeof(err)), PROV_EPROTO);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    assert_non_null(f = fopen(path, "r"));
    n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    snprintf(origin, sizeof(origin), "(http://127.0.0.1:%d)", plain_port);
    assert_non_null(strstr(text, ALLOC_WHAT " answered 400: cannot place this device"));
    assert_non_null(strstr(text, ALLOC_WHAT " answer has no iotHubHostName"));
    assert_non_null(strstr(text, origin));
    assert_null(strstr(text, SECRET));
    assert_null(strstr(text, "/fail"));
    json_decref(req);
}

/* ---- hub connector --------------------------------------------------------------- */

static void *open_connector(const char *mode)
{
    char url[256], err[256];
    void *st = NULL;

    url_for(url, sizeof(url), mode);
    assert_int_equal(hub_webhook_ops.open(url, &st, err, sizeof(err)), 0);
    assert_non_null(st);
    return st;
}

/* base64(HMAC-SHA256(key, "provd-hub-password:" || device_id)), computed here on its own. */
static void expected_password(const uint8_t *key, size_t len, const char *device_id, char out[45])
{
    unsigned char msg[256], mac[32];
    unsigned int maclen = 0;
    int n = snprintf((char *)msg, sizeof(msg), "provd-hub-password:%s", device_id);

    assert_non_null(HMAC(EVP_sha256(), key, (int)len, msg, (size_t)n, mac, &maclen));
    assert_int_equal(maclen, 32);
    assert_int_equal(EVP_EncodeBlock((unsigned char *)out, mac, 32), 44);
}

static void test_hub_create_symkey(void **state)
{
    static const uint8_t key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    json_t *twin = json_pack("{s:{s:s}, s:{s:{s:i}}}", "tags", "site", "b1", "properties",
                             "desired", "interval", 30);
    struct hub_device dev = {.device_id = "dev-sym",
                             .registration_id = "dev-sym",
                             .attestation = "symmetricKey",
                             .key = key,
                             .key_len = sizeof(key),
                             .initial_twin = twin,
                             .iot_edge = true};
    void *st = open_connector("hub-accept");
    char err[256], pw[45];
    json_t *logged, *body, *expect;

    (void)state;
    assert_int_equal(hub_webhook_ops.provision(st, "hubA.example.test", &dev, err, sizeof(err)), 0);
    assert_int_equal(log_lines(plain_log, &logged), log_lines(plain_log, NULL));
    body = json_object_get(logged, "body");
    expected_password(key, sizeof(key), "dev-sym", pw);
    expect = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:O, s:{s:s, s:s}}", "operation", "create",
                       "hubHostName", "hubA.example.test", "deviceId", "dev-sym", "registrationId",
                       "dev-sym", "attestation", "symmetricKey", "iotEdge", 1, "initialTwin", twin,
                       "authentication", "type", "sas", "password", pw);
    assert_true(json_equal(body, expect));
    assert_string_equal(json_string_value(json_object_get(logged, "path")),
                        "/hub-accept?code=" SECRET);
    json_decref(expect);
    json_decref(logged);
    json_decref(twin);
    hub_webhook_ops.close(st);
}

static void test_hub_create_x509_and_delete(void **state)
{
    struct hub_device dev = {
        .device_id = "dev-x509",
        .registration_id = "dev-x509",
        .attestation = "x509",
        .x509_cn = "dev-x509",
        .x509_thumbprint = "4f0b6bbd1bc2b8e1a4c5d9a0f5bb0a9d4e3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a"};
    void *st = open_connector("hub-accept");
    char err[256];
    json_t *logged, *expect;

    (void)state;
    assert_int_equal(hub_webhook_ops.provision(st, "hubB.example.test", &dev, err, sizeof(err)), 0);
    log_lines(plain_log, &logged);
    expect = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:{s:s, s:s, s:s}}", "operation", "create",
                       "hubHostName", "hubB.example.test", "deviceId", "dev-x509", "registrationId",
                       "dev-x509", "attestation", "x509", "iotEdge", 0, "authentication", "type",
                       "x509", "thumbprint", dev.x509_thumbprint, "subjectName", "dev-x509");
    assert_true(json_equal(json_object_get(logged, "body"), expect));
    json_decref(expect);
    json_decref(logged);

    assert_int_equal(
        hub_webhook_ops.deprovision(st, "hubB.example.test", "dev-x509", err, sizeof(err)), 0);
    log_lines(plain_log, &logged);
    expect = json_pack("{s:s, s:s, s:s}", "operation", "delete", "hubHostName", "hubB.example.test",
                       "deviceId", "dev-x509");
    assert_true(json_equal(json_object_get(logged, "body"), expect));
    json_decref(expect);
    json_decref(logged);

    /* an X.509 device without its certificate's identity is refused before any request */
    dev.x509_thumbprint = NULL;
    assert_int_equal(hub_webhook_ops.provision(st, "hubB.example.test", &dev, err, sizeof(err)),
                     PROV_EINVAL);
    hub_webhook_ops.close(st);
}

static void test_hub_failures(void **state)
{
    static const uint8_t key[16] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
    struct hub_device dev = {.device_id = "dev-tpm",
                             .registration_id = "dev-tpm",
                             .attestation = "tpm",
                             .key = key,
                             .key_len = sizeof(key)};
    void *st = open_connector("hub-fail");
    char err[256];

    (void)state;
    assert_int_equal(hub_webhook_ops.provision(st, "hubA.example.test", &dev, err, sizeof(err)),
                     PROV_EPROTO);
    assert_string_equal(err, "hub webhook answered 500: hub refused the identity");
    assert_int_equal(
        hub_webhook_ops.deprovision(st, "hubA.example.test", "dev-tpm", err, sizeof(err)),
        PROV_EPROTO);
    assert_string_equal(err, "hub webhook answered 500: hub refused the identity");
    hub_webhook_ops.close(st);

    /* a key device without its key */
    st = open_connector("hub-accept");
    dev.key = NULL;
    assert_int_equal(hub_webhook_ops.provision(st, "hubA.example.test", &dev, err, sizeof(err)),
                     PROV_EINVAL);
    hub_webhook_ops.close(st);

    /* open refuses what is not http(s), without echoing the URL */
    st = (void *)1;
    assert_int_equal(hub_webhook_ops.open("mosquitto://u:" SECRET "@h:1883", &st, err, sizeof(err)),
                     PROV_EINVAL);
    assert_null(st);
    assert_null(strstr(err, SECRET));
    assert_string_equal(hub_webhook_ops.name, "webhook");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocation_success),
        cmocka_unit_test(test_allocation_400_text),
        cmocka_unit_test(test_allocation_timeout),
        cmocka_unit_test(test_allocation_connect_refused),
        cmocka_unit_test(test_allocation_bad_answers),
        cmocka_unit_test(test_allocation_redirect_not_followed),
        cmocka_unit_test(test_allocation_concurrent),
        cmocka_unit_test(test_https),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_url_origin),
        cmocka_unit_test(test_excerpt),
        cmocka_unit_test(test_no_secret_in_log),
        cmocka_unit_test(test_hub_create_symkey),
        cmocka_unit_test(test_hub_create_x509_and_delete),
        cmocka_unit_test(test_hub_failures),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup, teardown);
}
