/*
 * Test tool over the hub connectors (src/server/hub.h), for
 * tests/system/t501-mosquitto-connector.sh: calls a connector the way the
 * assigner threads do, without provd.
 *
 *   hub_tool URL open
 *   hub_tool URL provision HOSTNAME DEVICE_ID ATTESTATION [KEY_B64|-] [TWIN_JSON]
 *   hub_tool URL deprovision HOSTNAME DEVICE_ID
 *   hub_tool URL bench HOSTNAME PREFIX COUNT [THREADS]
 *   hub_tool URL repl
 *
 * URL picks the connector as provd does (mosquitto://, mosquittos://,
 * https://, http://). ATTESTATION is symmetricKey, tpm or x509 (no key: "-"
 * or nothing). TWIN_JSON is the enrollment's initialTwin; "null" passes none
 * (the connector leaves the hub's twin alone). bench provisions COUNT
 * symmetric-key devices PREFIX-0.. with random keys (THREADS at once, default
 * 1), then deprovisions them, and prints the milliseconds per call. repl
 * keeps one connector open and reads commands from stdin, one a line
 * ("provision ..." or "deprovision ..." with the arguments above, separated by
 * single spaces, so TWIN_JSON must have none), answering each with a line
 * "ok" or "fail CODE: reason" (for tests that need a connector's state to
 * live across broker restarts).
 * HUB_TOOL_LOG=debug|info|warn|error sets provd's log level (default warn).
 *
 * Exit status 0, or 1 with the connector's reason on stderr (2: usage).
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "src/common/errors.h"
#include "src/common/log.h"
#include "src/common/util.h"
#include "src/server/hub.h"

struct bench {
    const struct hub_connector_ops *ops;
    void *state;
    const char *hostname;
    const char *prefix;
    long count;
    long next;
    long failed;
    bool deprovision;
    pthread_mutex_t lock;
};

static int usage(void)
{
    fprintf(stderr, "usage: hub_tool URL open\n"
                    "       hub_tool URL provision HOSTNAME DEVICE_ID ATTESTATION [KEY_B64|-] "
                    "[TWIN_JSON]\n"
                    "       hub_tool URL deprovision HOSTNAME DEVICE_ID\n"
                    "       hub_tool URL bench HOSTNAME PREFIX COUNT [THREADS]\n");
    return 2;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int provision(const struct hub_connector_ops *ops, void *state, char **argv, int argc,
                     char *err, size_t errlen)
{
    struct hub_device d = {
        .device_id = argv[4], .registration_id = argv[4], .attestation = argv[5]};
    const char *key_b64 = argc > 6 && strcmp(argv[6], "-") != 0 ? argv[6] : NULL;
    uint8_t key[128];
    json_t *twin = NULL;
    int n, r;

    if (key_b64 != NULL) {
        if (strlen(key_b64) > 160 || (n = b64_decode(key_b64, strlen(key_b64), key)) <= 0) {
            snprintf(err, errlen, "KEY_B64 is not base64 (at most 120 bytes)");
            return 2;
        }
        d.key = key;
        d.key_len = (size_t)n;
    }
    if (strcmp(d.attestation, "x509") == 0)
        d.x509_cn = d.device_id;
    if (argc > 7 && (twin = json_loads(argv[7], JSON_DECODE_ANY, NULL)) == NULL) {
        snprintf(err, errlen, "TWIN_JSON is not JSON");
        return 2;
    }
    d.initial_twin = json_is_null(twin) ? NULL : twin;
    r = ops->provision(state, argv[3], &d, err, errlen);
    json_decref(twin);
    prov_cleanse(key, sizeof(key));
    return r;
}

/* One command: argv as on the command line (argv[0], argv[1] unused). */
static int run_one(const struct hub_connector_ops *ops, void *state, char **argv, int argc,
                   char *err, size_t errlen)
{
    if (strcmp(argv[2], "provision") == 0 && argc >= 6 && argc <= 8)
        return provision(ops, state, argv, argc, err, errlen);
    if (strcmp(argv[2], "deprovision") == 0 && argc == 5)
        return ops->deprovision(state, argv[3], argv[4], err, errlen);
    return 2;
}

static int repl(const struct hub_connector_ops *ops, void *state)
{
    char line[4096], err[512];

    while (fgets(line, sizeof(line), stdin) != NULL) {
        char *argv[10] = {"hub_tool", "-"}, *save = NULL, *tok;
        int argc = 2, r;

        line[strcspn(line, "\r\n")] = '\0';
        for (tok = strtok_r(line, " ", &save); tok != NULL && argc < 10;
             tok = strtok_r(NULL, " ", &save))
            argv[argc++] = tok;
        if (argc < 3)
            continue;
        err[0] = '\0';
        r = run_one(ops, state, argv, argc, err, sizeof(err));
        if (r == 0)
            printf("ok\n");
        else
            printf("fail %s: %s\n", r == 2 ? "usage" : prov_err_name(r), err);
        fflush(stdout);
    }
    return 0;
}

static void *bench_worker(void *arg)
{
    struct bench *b = arg;
    char id[160], err[512];
    uint8_t key[32];

    for (;;) {
        struct hub_device d = {.attestation = "symmetricKey", .key = key, .key_len = sizeof(key)};
        long i;
        int r;

        pthread_mutex_lock(&b->lock);
        i = b->next < b->count ? b->next++ : -1;
        pthread_mutex_unlock(&b->lock);
        if (i < 0)
            return NULL;
        snprintf(id, sizeof(id), "%s-%ld", b->prefix, i);
        d.device_id = d.registration_id = id;
        if (b->deprovision) {
            r = b->ops->deprovision(b->state, b->hostname, id, err, sizeof(err));
        } else {
            r = random_bytes(key, sizeof(key));
            if (r == 0)
                r = b->ops->provision(b->state, b->hostname, &d, err, sizeof(err));
        }
        if (r != 0) {
            fprintf(stderr, "hub_tool: %s: %s\n", id, err);
            pthread_mutex_lock(&b->lock);
            b->failed++;
            pthread_mutex_unlock(&b->lock);
        }
    }
}

/* Runs COUNT calls on THREADS threads; prints the ms per call. */
static int bench_phase(struct bench *b, long threads, const char *what)
{
    pthread_t tids[64];
    double t0 = now_ms(), ms;
    long i, started = 0;

    b->next = 0;
    b->failed = 0;
    for (i = 0; i < threads; i++) {
        if (pthread_create(&tids[i], NULL, bench_worker, b) != 0)
            break;
        started++;
    }
    for (i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    ms = now_ms() - t0;
    printf("%s: %ld in %.0f ms on %ld thread(s): %.2f ms each, %.1f/s, %ld failed\n", what,
           b->count, ms, started, ms / (double)b->count, (double)b->count * 1000.0 / ms, b->failed);
    return b->failed == 0 && started > 0 ? 0 : 1;
}

static int bench(const struct hub_connector_ops *ops, void *state, char **argv, int argc)
{
    struct bench b = {.ops = ops, .state = state, .hostname = argv[3], .prefix = argv[4]};
    long threads = 1;
    int r;

    if (parse_long(argv[5], 1, 1000000, &b.count) != 0 ||
        (argc > 6 && parse_long(argv[6], 1, 64, &threads) != 0))
        return usage();
    pthread_mutex_init(&b.lock, NULL);
    r = bench_phase(&b, threads, "provision");
    b.deprovision = true;
    r |= bench_phase(&b, threads, "deprovision");
    pthread_mutex_destroy(&b.lock);
    return r;
}

int main(int argc, char **argv)
{
    const struct hub_connector_ops *ops;
    const char *level = getenv("HUB_TOOL_LOG");
    enum log_level lv = LOG_WARN;
    void *state = NULL;
    char err[512] = "";
    int r;

    if (argc < 3)
        return usage();
    signal(SIGPIPE, SIG_IGN); /* as provd's main */
    if (level != NULL && log_parse_level(level, &lv) != 0)
        return usage();
    log_set_level(lv);
    if ((ops = hub_connector_for(argv[1])) == NULL) {
        fprintf(stderr, "hub_tool: no connector for this URL scheme\n");
        return 1;
    }
    if ((r = ops->open(argv[1], &state, err, sizeof(err))) != 0) {
        fprintf(stderr, "hub_tool: open failed (%s): %s\n", prov_err_name(r), err);
        return 1;
    }
    if (strcmp(argv[2], "open") == 0 && argc == 3) {
        r = 0;
    } else if (strcmp(argv[2], "bench") == 0 && (argc == 6 || argc == 7)) {
        r = bench(ops, state, argv, argc);
    } else if (strcmp(argv[2], "repl") == 0 && argc == 3) {
        r = repl(ops, state);
    } else if ((r = run_one(ops, state, argv, argc, err, sizeof(err))) == 2) {
        if (err[0] != '\0')
            fprintf(stderr, "hub_tool: %s\n", err);
        r = usage();
    } else if (r != 0) {
        fprintf(stderr, "hub_tool: %s failed (%s): %s\n", argv[2], prov_err_name(r), err);
        r = 1;
    }
    ops->close(state);
    return r;
}
