/*
 * Unit tests for src/server/config.c: flags, the config file, precedence,
 * repeatable lists, every kind of bad value, --help and --version.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "src/common/errors.h"
#include "src/common/log.h"
#include "src/server/config.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_ARGS 80

/* 32 bytes, 16 bytes, 64 bytes of key material in base64 */
#define KEY32 "llbXt1AZ5RELJWOjp9Xm42MrmYYU6X6st66vl5mHb9Y="
#define KEY16 "AAECAwQFBgcICQoLDA0ODw=="
#define KEY64                                                                                    \
    "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="

#define B64_31 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define B64_93 B64_31 B64_31 B64_31 B64_31 /* 124 characters, 93 bytes */

struct fixture {
    struct config cfg;
    char err[512];
    bool exit_now;
    char path[64];     /* a temporary config file */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f->path[0] != '\0')
        unlink(f->path);
    config_clear(&f->cfg);
    free(f);
    return 0;
}

/* Runs config_load on a NULL-terminated list of arguments after "provd". */
static int load_argv(struct fixture *f, const char *const *args)
{
    char *argv[MAX_ARGS];
    int argc = 0;

    argv[argc++] = (char *)"provd";
    for (; *args != NULL; args++) {
        assert_true(argc < MAX_ARGS - 1);
        argv[argc++] = (char *)*args;
    }
    argv[argc] = NULL;
    f->err[0] = '\0';
    return config_load(&f->cfg, argc, argv, &f->exit_now, f->err, sizeof(f->err));
}

#define LOAD(f, ...) load_argv((f), (const char *const[]){__VA_ARGS__, NULL})

static void write_file(struct fixture *f, const char *text)
{
    FILE *fp;
    int fd;

    if (f->path[0] == '\0') {
        snprintf(f->path, sizeof(f->path), "/tmp/provd-test-config-XXXXXX");
        fd = mkstemp(f->path);
        assert_true(fd >= 0);
        close(fd);
    }
    fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void test_minimal_defaults(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(LOAD(f, "--tls-cert", "c.pem", "--tls-key", "k.pem", "--id-scope",
                          "0ne00ABC123"),
                     0);
    assert_false(f->exit_now);
    assert_string_equal(f->cfg.tls_cert, "c.pem");
    assert_string_equal(f->cfg.tls_key, "k.pem");
    assert_int_equal(f->cfg.nscopes, 1);
    assert_string_equal(f->cfg.scopes[0], "0ne00ABC123");
    /* defaults */
    assert_int_equal(f->cfg.nlisten, 1);
    assert_string_equal(f->cfg.listen[0].host, "127.0.0.1");
    assert_string_equal(f->cfg.listen[0].port, "443");
    assert_string_equal(f->cfg.data_dir, "provd-data");
    assert_int_equal(f->cfg.retry_after, 2);
    assert_int_equal(f->cfg.workers, 0);
    assert_int_equal(f->cfg.log_level, LOG_INFO);
    assert_int_equal(f->cfg.npolicies, 0);
    assert_int_equal(f->cfg.nhubs, 0);
}

static void test_all_flags(void **state)
{
    struct fixture *f = *state;
    const struct cfg_policy *p;

    assert_int_equal(LOAD(f, "--listen", "0.0.0.0:8443", "--listen=[::1]:9443", "--tls-cert=c.pem",
                          "--tls-key", "k.pem", "--data-dir", "/var/lib/provd", "--id-scope",
                          "0ne00ABC123", "--id-scope=scope_2-b", "--policy",
                          "provisioningserviceowner=" KEY32, "--policy",
                          "reader=" KEY16 ":EnrollmentRead, registrationstatusread", "--hub",
                          "Hub-1.Azure-Devices.net", "--hub=hub2.example", "--workers", "4",
                          "--retry-after=30", "--log-level", "debug"),
                     0);
    assert_int_equal(f->cfg.nlisten, 2);
    assert_string_equal(f->cfg.listen[0].host, "0.0.0.0");
    assert_string_equal(f->cfg.listen[0].port, "8443");
    assert_string_equal(f->cfg.listen[1].host, "::1"); /* brackets removed */
    assert_string_equal(f->cfg.listen[1].port, "9443");
    assert_string_equal(f->cfg.data_dir, "/var/lib/provd");
    assert_int_equal(f->cfg.nscopes, 2);
    assert_string_equal(f->cfg.scopes[1], "scope_2-b");
    assert_int_equal(f->cfg.npolicies, 2);
    p = &f->cfg.policies[0];
    assert_string_equal(p->name, "provisioningserviceowner");
    assert_int_equal(p->keylen, 32);
    assert_int_equal(p->key[0], 0x96);
    assert_int_equal(p->rights, RIGHT_ALL);
    p = &f->cfg.policies[1];
    assert_string_equal(p->name, "reader");
    assert_int_equal(p->keylen, 16);
    assert_int_equal(p->key[15], 15);
    assert_int_equal(p->rights, RIGHT_ENROLLMENT_READ | RIGHT_REGISTRATION_READ);
    assert_int_equal(f->cfg.nhubs, 2);
    assert_string_equal(f->cfg.hubs[0].hostname, "hub-1.azure-devices.net"); /* lower-cased */
    assert_int_equal(f->cfg.hubs[0].weight, 1);
    assert_string_equal(f->cfg.hubs[1].hostname, "hub2.example");
    assert_int_equal(f->cfg.workers, 4);
    assert_int_equal(f->cfg.retry_after, 30);
    assert_int_equal(f->cfg.log_level, LOG_DEBUG);
    assert_string_equal(config_find_scope(&f->cfg, "0NE00abc123"), "0ne00ABC123");
    assert_null(config_find_scope(&f->cfg, "0ne00ABC12"));
}

static void test_policy_keys(void **state)
{
    struct fixture *f = *state;

    /* 64 bytes is the largest key */
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--tls-key", "k", "--id-scope", "s", "--policy",
                          "big=" KEY64 ":ServiceConfig,DeviceConnect,RegistrationStatusWrite,"
                          "EnrollmentWrite"),
                     0);
    assert_int_equal(f->cfg.policies[0].keylen, 64);
    assert_int_equal(f->cfg.policies[0].rights, RIGHT_SERVICE_CONFIG | RIGHT_DEVICE_CONNECT |
                                                    RIGHT_REGISTRATION_WRITE |
                                                    RIGHT_ENROLLMENT_WRITE);
    config_clear(&f->cfg);
    for (size_t i = 0; i < f->cfg.policies[0].keylen; i++)
        assert_int_equal(f->cfg.policies[0].key[i], 0);
}

static void test_config_file(void **state)
{
    struct fixture *f = *state;

    write_file(f, "# provd test configuration\n"
                  "\n"
                  "listen 127.0.0.2:443\n"
                  "  listen   127.0.0.3:444   \n"
                  "tls-cert /etc/provd/server.pem\n"
                  "tls-key /etc/provd/server.key\n"
                  "\t# indented comment\n"
                  "id-scope 0ne0000FILE\n"
                  "policy owner=" KEY32 "\n"
                  "hub hub-a.example\n"
                  "hub hub-b.example\n"
                  "retry-after 5\n"
                  "workers 2\n"
                  "log-level warn\n"
                  "data-dir /srv/provd data\n");
    assert_int_equal(LOAD(f, "--config", f->path), 0);
    assert_int_equal(f->cfg.nlisten, 2);
    assert_string_equal(f->cfg.listen[0].host, "127.0.0.2");
    assert_string_equal(f->cfg.listen[1].port, "444");
    assert_string_equal(f->cfg.tls_cert, "/etc/provd/server.pem");
    assert_string_equal(f->cfg.scopes[0], "0ne0000FILE");
    assert_int_equal(f->cfg.npolicies, 1);
    assert_int_equal(f->cfg.policies[0].keylen, 32);
    assert_int_equal(f->cfg.nhubs, 2);
    assert_int_equal(f->cfg.retry_after, 5);
    assert_int_equal(f->cfg.workers, 2);
    assert_int_equal(f->cfg.log_level, LOG_WARN);
    assert_string_equal(f->cfg.data_dir, "/srv/provd data"); /* the rest of the line */

    /* --config=FILE form, anywhere on the line */
    assert_int_equal(LOAD(f, "--workers", "3", "--config=" "/nonexistent-provd-config"),
                     PROV_EINVAL);
    assert_non_null(strstr(f->err, "/nonexistent-provd-config"));
    assert_int_equal(LOAD(f, "--workers", "3", (const char *)f->path), PROV_EINVAL);
}

static void test_flags_override_file(void **state)
{
    struct fixture *f = *state;

    write_file(f, "listen 127.0.0.2:443\n"
                  "listen 127.0.0.3:443\n"
                  "tls-cert file.pem\n"
                  "tls-key file.key\n"
                  "id-scope 0ne0000FILE\n"
                  "id-scope 0ne0000FIL2\n"
                  "hub hub-a.example\n"
                  "hub hub-b.example\n"
                  "policy owner=" KEY32 "\n"
                  "retry-after 5\n");
    /* flags before and after --config both win over the file */
    assert_int_equal(LOAD(f, "--retry-after", "7", "--config", f->path, "--tls-cert", "flag.pem",
                          "--listen", "10.0.0.1:8443", "--id-scope", "0ne0000FLAG",
                          "--id-scope", "0ne0000FLG2", "--policy", "other=" KEY16),
                     0);
    assert_int_equal(f->cfg.retry_after, 7);
    assert_string_equal(f->cfg.tls_cert, "flag.pem");
    assert_string_equal(f->cfg.tls_key, "file.key");
    /* a repeatable flag replaces the file's list; it does not append to it */
    assert_int_equal(f->cfg.nlisten, 1);
    assert_string_equal(f->cfg.listen[0].host, "10.0.0.1");
    assert_int_equal(f->cfg.nscopes, 2);
    assert_string_equal(f->cfg.scopes[0], "0ne0000FLAG");
    assert_string_equal(f->cfg.scopes[1], "0ne0000FLG2");
    assert_int_equal(f->cfg.npolicies, 1);
    assert_string_equal(f->cfg.policies[0].name, "other");
    /* lists not given as flags keep the file's entries */
    assert_int_equal(f->cfg.nhubs, 2);
    assert_string_equal(f->cfg.hubs[1].hostname, "hub-b.example");
    /* a scope only in the file is gone */
    assert_null(config_find_scope(&f->cfg, "0ne0000FILE"));
}

struct bad_case {
    const char *args[6];
    const char *flag; /* the error must name this */
};

static void test_bad_values(void **state)
{
    static const struct bad_case cases[] = {
        {{"--listen", "nope"}, "--listen"},
        {{"--listen", "127.0.0.1"}, "--listen"},
        {{"--listen", ":443"}, "--listen"},
        {{"--listen", "127.0.0.1:0"}, "--listen"},
        {{"--listen", "127.0.0.1:65536"}, "--listen"},
        {{"--listen", "127.0.0.1:https"}, "--listen"},
        {{"--listen", "127.0.0.1:"}, "--listen"},
        {{"--listen",
          "a-host-name-that-is-much-longer-than-sixty-four-characters-for-sure.example:1"},
         "--listen"},
        {{"--tls-cert", ""}, "--tls-cert"},
        {{"--tls-key", ""}, "--tls-key"},
        {{"--data-dir", ""}, "--data-dir"},
        {{"--id-scope", ""}, "--id-scope"},
        {{"--id-scope", "has space"}, "--id-scope"},
        {{"--id-scope", "slash/scope"}, "--id-scope"},
        {{"--id-scope", "registrations"}, "--id-scope"},
        {{"--id-scope", "Enrollments"}, "--id-scope"},
        {{"--id-scope", "enrollmentgroups"}, "--id-scope"},
        {{"--id-scope",
          "s1234567890123456789012345678901234567890123456789012345678901234"},
         "--id-scope"},
        {{"--id-scope", "dup", "--id-scope", "DUP"}, "--id-scope"},
        {{"--policy", "nokey"}, "--policy"},
        {{"--policy", "=" KEY32}, "--policy"},
        {{"--policy", "p="}, "--policy"},
        {{"--policy", "p=not base64!"}, "--policy"},
        {{"--policy", "p=AAECAwQFBgcICQoLDA0O"}, "--policy"},  /* 15 bytes */
        {{"--policy", "p=" KEY64 "AAAA"}, "--policy"},          /* 67 bytes */
        {{"--policy", "p=" KEY64 KEY32}, "--policy"},           /* 96 bytes */
        {{"--policy", "p=" KEY32 ":EnrollmentRead,Frobnicate"}, "--policy"},
        {{"--policy", "p=" B64_93}, "--policy"},
        {{"--policy", "p=" KEY32, "--policy", "P=" KEY16}, "--policy"},
        {{"--hub", ""}, "--hub"},
        {{"--hub", "bad host"}, "--hub"},
        {{"--hub", "under_score.example"}, "--hub"},
        {{"--hub", "https://hub.example"}, "--hub"},
        {{"--hub", "h.example=ftp://x.example/"}, "--hub"},
        {{"--hub", "h.example="}, "--hub"},
        {{"--hub", "=mosquitto://a:b@c:1"}, "--hub"},
        {{"--hub", "h.example", "--hub", "H.Example=https://x.example/"}, "--hub"},
        {{"--hub-weight", "h.example=2"}, "--hub-weight"}, /* no such hub */
        {{"--hub", "h.example", "--hub-weight", "h.example=0"}, "--hub-weight"},
        {{"--hub", "h.example", "--hub-weight", "h.example=1001"}, "--hub-weight"},
        {{"--hub", "h.example", "--hub-weight", "h.example"}, "--hub-weight"},
        {{"--hub", "h.example", "--hub-apply-allocation-policy", "h.example=maybe"},
         "--hub-apply-allocation-policy"},
        {{"--hub-apply-allocation-policy", "x.example=false"}, "--hub-apply-allocation-policy"},
        {{"--assigners", "0"}, "--assigners"},
        {{"--assigners", "65"}, "--assigners"},
        {{"--custom-allocation-timeout", "99"}, "--custom-allocation-timeout"},
        {{"--custom-allocation-timeout", "60001"}, "--custom-allocation-timeout"},
        {{"--workers", "-1"}, "--workers"},
        {{"--workers", "257"}, "--workers"},
        {{"--workers", "two"}, "--workers"},
        {{"--workers", ""}, "--workers"},
        {{"--retry-after", "0"}, "--retry-after"},
        {{"--retry-after", "301"}, "--retry-after"},
        {{"--retry-after", "1s"}, "--retry-after"},
        {{"--log-level", "verbose"}, "--log-level"},
        {{"--log-level", ""}, "--log-level"},
        {{"--workers"}, "--workers"},          /* missing value */
        {{"--frobnicate", "1"}, "--frobnicate"}, /* unknown flag */
        {{"--config"}, "--config"},
    };
    struct fixture *f = *state;

    for (size_t i = 0; i < N(cases); i++) {
        const char *args[24];
        size_t n = 0;
        int r;

        args[n++] = "--tls-cert";
        args[n++] = "c.pem";
        args[n++] = "--tls-key";
        args[n++] = "k.pem";
        args[n++] = "--id-scope";
        args[n++] = "0ne00ABC123";
        for (size_t k = 0; k < N(cases[i].args) && cases[i].args[k] != NULL; k++)
            args[n++] = cases[i].args[k];
        args[n] = NULL;
        r = load_argv(f, args);
        if (r != PROV_EINVAL)
            fail_msg("case %zu (%s %s): returned %d, err \"%s\"", i, cases[i].args[0],
                     cases[i].args[1] ? cases[i].args[1] : "", r, f->err);
        if (strstr(f->err, cases[i].flag) == NULL)
            fail_msg("case %zu (%s %s): error \"%s\" does not name %s", i, cases[i].args[0],
                     cases[i].args[1] ? cases[i].args[1] : "", f->err, cases[i].flag);
        config_clear(&f->cfg);
    }
}

static void test_required(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(LOAD(f, "--tls-key", "k", "--id-scope", "s"), PROV_EINVAL);
    assert_non_null(strstr(f->err, "--tls-cert"));
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--id-scope", "s"), PROV_EINVAL);
    assert_non_null(strstr(f->err, "--tls-key"));
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--tls-key", "k"), PROV_EINVAL);
    assert_non_null(strstr(f->err, "--id-scope"));
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--tls-key", "k", "--id-scope", "s", "stray"),
                     PROV_EINVAL);
    assert_non_null(strstr(f->err, "stray"));
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--tls-key", "k", "--id-scope", "s", "-v"),
                     PROV_EINVAL);
    assert_non_null(strstr(f->err, "-v"));
}

static void test_list_limits(void **state)
{
    struct fixture *f = *state;
    const char *args[2 * (CFG_MAX_LIST + 1) + 8];
    char listens[CFG_MAX_LIST + 1][32];
    size_t n = 0;

    args[n++] = "--tls-cert";
    args[n++] = "c";
    args[n++] = "--tls-key";
    args[n++] = "k";
    args[n++] = "--id-scope";
    args[n++] = "s";
    for (int i = 0; i < CFG_MAX_LIST; i++) {
        snprintf(listens[i], sizeof(listens[i]), "127.0.0.1:%d", 1000 + i);
        args[n++] = "--listen";
        args[n++] = listens[i];
    }
    args[n] = NULL;
    assert_true(n < N(args));
    assert_int_equal(load_argv(f, args), 0);
    assert_int_equal(f->cfg.nlisten, CFG_MAX_LIST);
    snprintf(listens[CFG_MAX_LIST], sizeof(listens[0]), "127.0.0.1:2000");
    args[n++] = "--listen";
    args[n++] = listens[CFG_MAX_LIST];
    args[n] = NULL;
    assert_int_equal(load_argv(f, args), PROV_EINVAL);
    assert_non_null(strstr(f->err, "--listen"));
}

static void test_bad_file(void **state)
{
    static const struct {
        const char *text;
        const char *want[3]; /* substrings of the error */
    } cases[] = {
        {"tls-cert c\nfrobnicate 1\n", {":2:", "frobnicate", NULL}},
        {"tls-cert c\n\n\nworkers\n", {":4:", "workers", NULL}},
        {"workers many\n", {":1:", "workers", "many"}},
        {"policy p=" KEY32 ":Nope\n", {":1:", "policy", "Nope"}},
        {"--listen 127.0.0.1:1\n", {":1:", "--listen", NULL}}, /* keys have no dashes */
        {"listen 127.0.0.1:99999\n", {":1:", "listen", NULL}},
    };
    struct fixture *f = *state;
    char longline[3000];

    for (size_t i = 0; i < N(cases); i++) {
        write_file(f, cases[i].text);
        assert_int_equal(LOAD(f, "--config", f->path, "--tls-cert", "c", "--tls-key", "k",
                              "--id-scope", "s"),
                         PROV_EINVAL);
        assert_non_null(strstr(f->err, f->path));
        for (int k = 0; k < 3 && cases[i].want[k] != NULL; k++) {
            if (strstr(f->err, cases[i].want[k]) == NULL)
                fail_msg("file case %zu: error \"%s\" lacks \"%s\"", i, f->err,
                         cases[i].want[k]);
        }
    }
    /* a line longer than the reader's buffer */
    memset(longline, 'a', sizeof(longline));
    memcpy(longline, "data-dir /", 10);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    write_file(f, longline);
    assert_int_equal(LOAD(f, "--config", f->path), PROV_EINVAL);
    assert_non_null(strstr(f->err, "too long"));
}

/* Runs config_load with stdout sent to a file and returns what it printed. */
static char *load_capturing_stdout(struct fixture *f, const char *arg, int *r)
{
    char path[] = "/tmp/provd-test-stdout-XXXXXX";
    int fd = mkstemp(path);
    int saved;
    char *text = calloc(1, 8192);
    FILE *fp;
    size_t n;

    assert_true(fd >= 0);
    assert_non_null(text);
    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDOUT_FILENO) >= 0);
    *r = LOAD(f, "--workers", "bad", arg);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    close(fd);
    fp = fopen(path, "r");
    assert_non_null(fp);
    n = fread(text, 1, 8191, fp);
    text[n] = '\0';
    fclose(fp);
    unlink(path);
    return text;
}

static void test_help_and_version(void **state)
{
    struct fixture *f = *state;
    static const char *const flags[] = {
        "--config", "--listen", "--tls-cert", "--tls-key", "--data-dir", "--id-scope",
        "--policy", "--hub", "--workers", "--retry-after", "--log-level", "--help",
    };
    int r;
    char *text;

    /* --help wins over bad values and the missing required flags */
    text = load_capturing_stdout(f, "--help", &r);
    assert_int_equal(r, 0);
    assert_true(f->exit_now);
    assert_non_null(strstr(text, "usage: provd"));
    for (size_t i = 0; i < N(flags); i++) {
        if (strstr(text, flags[i]) == NULL)
            fail_msg("--help does not mention %s", flags[i]);
    }
    assert_non_null(strstr(text, "(repeatable)"));
    free(text);

    text = load_capturing_stdout(f, "-h", &r);
    assert_int_equal(r, 0);
    assert_true(f->exit_now);
    assert_non_null(strstr(text, "usage: provd"));
    free(text);

    text = load_capturing_stdout(f, "--version", &r);
    assert_int_equal(r, 0);
    assert_true(f->exit_now);
    assert_true(strncmp(text, "provd ", 6) == 0);
    assert_true(text[6] >= '0' && text[6] <= '9');
    free(text);
}

static void test_parse_rights(void **state)
{
    unsigned bits = 12345;

    (void)state;
    assert_int_equal(config_parse_rights("EnrollmentRead", &bits), 0);
    assert_int_equal(bits, RIGHT_ENROLLMENT_READ);
    assert_int_equal(config_parse_rights(" enrollmentwrite ,RegistrationStatusWrite", &bits), 0);
    assert_int_equal(bits, RIGHT_ENROLLMENT_WRITE | RIGHT_REGISTRATION_WRITE);
    assert_int_equal(config_parse_rights("ServiceConfig,EnrollmentRead,EnrollmentWrite,"
                                         "DeviceConnect,RegistrationStatusRead,"
                                         "RegistrationStatusWrite",
                                         &bits),
                     0);
    assert_int_equal(bits, RIGHT_ALL);
    bits = 99;
    assert_int_equal(config_parse_rights("Enrollment", &bits), PROV_EINVAL);
    assert_int_equal(config_parse_rights("EnrollmentReadX", &bits), PROV_EINVAL);
    assert_int_equal(config_parse_rights("EnrollmentRead,,EnrollmentWrite", &bits), PROV_EINVAL);
    assert_int_equal(config_parse_rights(",", &bits), PROV_EINVAL);
    assert_int_equal(bits, 99); /* untouched on failure */
}

/* Linked hubs: connector URLs, weights and the apply-allocation-policy flag. */
static void test_hubs(void **state)
{
    struct fixture *f = *state;

    write_file(f, "tls-cert c.pem\n"
                  "tls-key k.pem\n"
                  "id-scope 0ne00ABC123\n"
                  "hub-weight broker-b.example=3\n" /* before its hub: resolved at the end */
                  "hub broker-a.example=mosquitto://provd:s3cret@127.0.0.1:1883\n"
                  "hub Broker-B.example=mosquittos://provd:s3cret@broker-b.example:8883\n"
                  "hub record.example\n"
                  "hub hook.example=https://hooks.example/provd?code=abc\n"
                  "hub-apply-allocation-policy record.example=false\n"
                  "assigners 2\n"
                  "custom-allocation-timeout 1500\n");
    assert_int_equal(LOAD(f, "--config", f->path), 0);
    assert_int_equal(f->cfg.nhubs, 4);
    assert_string_equal(f->cfg.hubs[0].hostname, "broker-a.example");
    assert_string_equal(f->cfg.hubs[0].url, "mosquitto://provd:s3cret@127.0.0.1:1883");
    assert_int_equal(f->cfg.hubs[0].weight, 1);
    assert_true(f->cfg.hubs[0].apply_allocation_policy);
    assert_string_equal(f->cfg.hubs[1].hostname, "broker-b.example");
    assert_int_equal(f->cfg.hubs[1].weight, 3);
    assert_string_equal(f->cfg.hubs[2].url, "");
    assert_false(f->cfg.hubs[2].apply_allocation_policy);
    assert_true(f->cfg.hubs[3].apply_allocation_policy);
    assert_int_equal(f->cfg.assigners, 2);
    assert_int_equal(f->cfg.custom_allocation_timeout, 1500);

    /* defaults */
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--tls-key", "k", "--id-scope", "s"), 0);
    assert_int_equal(f->cfg.assigners, 4);
    assert_int_equal(f->cfg.custom_allocation_timeout, 5000);

    /* a bad connector URL is refused without echoing it (it may hold a password) */
    assert_int_equal(LOAD(f, "--tls-cert", "c", "--tls-key", "k", "--id-scope", "s", "--hub",
                          "h.example=ftp://user:hunter2@x.example/"),
                     PROV_EINVAL);
    assert_non_null(strstr(f->err, "h.example"));
    assert_null(strstr(f->err, "hunter2"));

    /* a weight on the command line replaces the file's weights, not its hubs */
    assert_int_equal(LOAD(f, "--config", f->path, "--hub-weight", "broker-a.example=7"), 0);
    assert_int_equal(f->cfg.hubs[0].weight, 7);
    assert_int_equal(f->cfg.hubs[1].weight, 1);
    assert_false(f->cfg.hubs[2].apply_allocation_policy);

    /* config_clear wipes the URLs */
    config_clear(&f->cfg);
    assert_string_equal(f->cfg.hubs[0].url, "");
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_minimal_defaults),
        T(test_all_flags),
        T(test_policy_keys),
        T(test_config_file),
        T(test_flags_override_file),
        T(test_bad_values),
        T(test_required),
        T(test_list_limits),
        T(test_bad_file),
        T(test_help_and_version),
        T(test_parse_rights),
        T(test_hubs),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
