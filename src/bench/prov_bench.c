/*
 * prov-bench: load generator for provd (docs/benchmarks.md).
 *
 *   prov-bench [run] [options]   register devices and report rate and latency
 *   prov-bench enroll [options]  create the devices' individual enrollments
 *                                through the service API's bulk operation
 *
 * Exit status: 0 when every device was assigned, 1 when any error happened
 * (unless --allow-errors) or nothing was assigned, 2 for bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/util.h"
#include "bench.h"
#include "bench_enroll.h"

static const char usage_text[] =
    "usage: prov-bench [run] [options]\n"
    "       prov-bench enroll [options] --policy-key KEY\n"
    "\n"
    "Simulates devices registering with a DPS-compatible server, each on its own TLS\n"
    "connection (no session resumption): a register request, then polls until assigned.\n"
    "\n"
    "Target:\n"
    "  --host HOST              server address (default 127.0.0.1)\n"
    "  --port PORT              default 443 (https, enroll) or 8883 (mqtt)\n"
    "  --bind IP                local address of the client sockets\n"
    "  --scope SCOPE            ID scope (required for run)\n"
    "  --ca FILE                CA certificates that the server certificate chains to\n"
    "  --insecure               do not check the server certificate\n"
    "  --transport https|mqtt   default https\n"
    "Devices:\n"
    "  --attestation symkey|x509|tpm   default symkey\n"
    "  --prefix P --count N     registration ids P0 .. P(N-1) (default dev-, 1000)\n"
    "  --first F --stride S     ids P(F), P(F+S), ... instead (defaults 0, 1)\n"
    "  --key B64                symmetric key of every device\n"
    "  --group-key B64          per-device keys derived from this group key\n"
    "  --x509-ca-cert F --x509-ca-key F    issue an intermediate under this CA, then leaves\n"
    "  --x509-int-cert F --x509-int-key F  issue the leaves under this intermediate\n"
    "  --x509-creds FILE        load leaves from FILE; when missing, save the made ones there\n"
    "  --tpm-keys FILE          TPM devices' EK/SRK keys (made and saved when missing)\n"
    "Load:\n"
    "  --concurrency C          devices in flight (default 16; enroll: requests, default 4)\n"
    "  --threads T              event-loop threads (default 1)\n"
    "  --duration S             run S seconds cycling through the ids (default: each once)\n"
    "  --warmup S               seconds not counted at the start of --duration (default 0)\n"
    "  --ignore-retry-after     poll at once instead of after Retry-After\n"
    "  --max-polls N            polls before a device counts as failed (default 1000)\n"
    "  --timeout S              per device (default 30)\n"
    "  --idle-mqtt N            connect N MQTT devices, subscribe, hold; report server memory\n"
    "  --hold S                 idle mode: keep them S seconds after the measurement (default 0)\n"
    "Report:\n"
    "  --server-pid PID[,PID]   the server's CPU time and memory (from /proc; summed)\n"
    "  --json                   one JSON line on stdout instead of the text report\n"
    "  --label TEXT             copied into the report\n"
    "  --quiet                  no progress on stderr\n"
    "  --allow-errors           exit 0 even when some devices failed\n"
    "Enroll:\n"
    "  --policy-name NAME       shared access policy (default provisioningserviceowner)\n"
    "  --policy-key B64         its key\n"
    "  --batch N                enrollments per bulk request (default: as many as fit, <= 1000)\n"
    "  --mode create|update     bulk mode (default create)\n";

enum opt_id {
    O_HOST = 256,
    O_PORT,
    O_BIND,
    O_SCOPE,
    O_CA,
    O_INSECURE,
    O_TRANSPORT,
    O_ATT,
    O_PREFIX,
    O_COUNT,
    O_FIRST,
    O_STRIDE,
    O_KEY,
    O_GROUP_KEY,
    O_X509_CA_CERT,
    O_X509_CA_KEY,
    O_X509_INT_CERT,
    O_X509_INT_KEY,
    O_X509_CREDS,
    O_TPM_KEYS,
    O_CONCURRENCY,
    O_THREADS,
    O_DURATION,
    O_WARMUP,
    O_IGNORE_RA,
    O_MAX_POLLS,
    O_TIMEOUT,
    O_IDLE_MQTT,
    O_HOLD,
    O_SERVER_PID,
    O_JSON,
    O_LABEL,
    O_QUIET,
    O_ALLOW_ERRORS,
    O_POLICY_NAME,
    O_POLICY_KEY,
    O_BATCH,
    O_MODE,
    O_HELP,
};

static const struct option long_opts[] = {
    {"host", required_argument, NULL, O_HOST},
    {"port", required_argument, NULL, O_PORT},
    {"bind", required_argument, NULL, O_BIND},
    {"scope", required_argument, NULL, O_SCOPE},
    {"ca", required_argument, NULL, O_CA},
    {"insecure", no_argument, NULL, O_INSECURE},
    {"transport", required_argument, NULL, O_TRANSPORT},
    {"attestation", required_argument, NULL, O_ATT},
    {"prefix", required_argument, NULL, O_PREFIX},
    {"count", required_argument, NULL, O_COUNT},
    {"first", required_argument, NULL, O_FIRST},
    {"stride", required_argument, NULL, O_STRIDE},
    {"key", required_argument, NULL, O_KEY},
    {"group-key", required_argument, NULL, O_GROUP_KEY},
    {"x509-ca-cert", required_argument, NULL, O_X509_CA_CERT},
    {"x509-ca-key", required_argument, NULL, O_X509_CA_KEY},
    {"x509-int-cert", required_argument, NULL, O_X509_INT_CERT},
    {"x509-int-key", required_argument, NULL, O_X509_INT_KEY},
    {"x509-creds", required_argument, NULL, O_X509_CREDS},
    {"tpm-keys", required_argument, NULL, O_TPM_KEYS},
    {"concurrency", required_argument, NULL, O_CONCURRENCY},
    {"threads", required_argument, NULL, O_THREADS},
    {"duration", required_argument, NULL, O_DURATION},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"ignore-retry-after", no_argument, NULL, O_IGNORE_RA},
    {"max-polls", required_argument, NULL, O_MAX_POLLS},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"idle-mqtt", required_argument, NULL, O_IDLE_MQTT},
    {"hold", required_argument, NULL, O_HOLD},
    {"server-pid", required_argument, NULL, O_SERVER_PID},
    {"json", no_argument, NULL, O_JSON},
    {"label", required_argument, NULL, O_LABEL},
    {"quiet", no_argument, NULL, O_QUIET},
    {"allow-errors", no_argument, NULL, O_ALLOW_ERRORS},
    {"policy-name", required_argument, NULL, O_POLICY_NAME},
    {"policy-key", required_argument, NULL, O_POLICY_KEY},
    {"batch", required_argument, NULL, O_BATCH},
    {"mode", required_argument, NULL, O_MODE},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "prov-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (--help for usage)\n");
    return 2;
}

static int num(const char *name, const char *s, long min, long max, long *out)
{
    if (parse_long(s, min, max, out) != 0)
        return bad("--%s: '%s' is not a number in range", name, s);
    return 0;
}

static int seconds(const char *name, const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || *out < 0 || *out > 86400)
        return bad("--%s: '%s' is not a number of seconds", name, s);
    return 0;
}

static int parse_choice(const char *name, const char *s, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return bad("--%s: unknown value '%s'", name, s);
}

/* --server-pid PID[,PID...] */
static int parse_pids(const char *arg, struct bench_opts *o)
{
    char buf[256], *tok, *save = NULL;

    snprintf(buf, sizeof(buf), "%s", arg);
    o->nserver_pids = 0;
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        long v;

        if (o->nserver_pids == sizeof(o->server_pids) / sizeof(o->server_pids[0]))
            return bad("--server-pid: too many");
        if (num("server-pid", tok, 1, 1L << 30, &v) != 0)
            return 2;
        o->server_pids[o->nserver_pids++] = v;
    }
    return o->nserver_pids > 0 ? 0 : bad("--server-pid: no process id");
}

/* One option into o / e; 0, or the exit status for bad usage. */
static int set_opt(int id, const char *arg, struct bench_opts *o, struct enroll_opts *e)
{
    static const char *const transports[] = {"https", "mqtt"};
    static const char *const atts[] = {"symkey", "x509", "tpm"};
    static const char *const modes[] = {"create", "update"};
    long v = 0;
    int c = 0, r = 0;

    switch (id) {
    case O_HOST: o->host = arg; break;
    case O_PORT:
        r = num("port", arg, 1, 65535, &v);
        o->port = arg;
        break;
    case O_BIND: o->bind_ip = arg; break;
    case O_SCOPE: o->scope = arg; break;
    case O_CA: o->ca_file = arg; break;
    case O_INSECURE: o->insecure = true; break;
    case O_TRANSPORT:
        r = parse_choice("transport", arg, transports, 2, &c);
        o->transport = (enum bench_transport)c;
        break;
    case O_ATT:
        r = parse_choice("attestation", arg, atts, 3, &c);
        o->att = (enum bench_att)c;
        break;
    case O_PREFIX: o->prefix = arg; break;
    case O_COUNT:
        r = num("count", arg, 1, 100000000, &v);
        o->count = (unsigned long)v;
        break;
    case O_FIRST:
        r = num("first", arg, 0, 1000000000, &v);
        o->first = (unsigned long)v;
        break;
    case O_STRIDE:
        r = num("stride", arg, 1, 1000000, &v);
        o->stride = (unsigned long)v;
        break;
    case O_KEY: o->key_b64 = arg; break;
    case O_GROUP_KEY: o->group_key_b64 = arg; break;
    case O_X509_CA_CERT: o->x509_ca_cert = arg; break;
    case O_X509_CA_KEY: o->x509_ca_key = arg; break;
    case O_X509_INT_CERT: o->x509_int_cert = arg; break;
    case O_X509_INT_KEY: o->x509_int_key = arg; break;
    case O_X509_CREDS: o->x509_creds = arg; break;
    case O_TPM_KEYS: o->tpm_keys = arg; break;
    case O_CONCURRENCY:
        r = num("concurrency", arg, 1, 100000, &v);
        o->concurrency = (unsigned)v;
        break;
    case O_THREADS:
        r = num("threads", arg, 1, 64, &v);
        o->threads = (unsigned)v;
        break;
    case O_DURATION: r = seconds("duration", arg, &o->duration); break;
    case O_WARMUP: r = seconds("warmup", arg, &o->warmup); break;
    case O_IGNORE_RA: o->ignore_retry_after = true; break;
    case O_MAX_POLLS:
        r = num("max-polls", arg, 1, 10000, &v);
        o->max_polls = (unsigned)v;
        break;
    case O_TIMEOUT: r = seconds("timeout", arg, &o->timeout); break;
    case O_IDLE_MQTT:
        r = num("idle-mqtt", arg, 1, 1000000, &v);
        o->idle_mqtt = (unsigned)v;
        break;
    case O_HOLD: r = seconds("hold", arg, &o->hold); break;
    case O_SERVER_PID: r = parse_pids(arg, o); break;
    case O_JSON: o->json = true; break;
    case O_LABEL: o->label = arg; break;
    case O_QUIET: o->quiet = true; break;
    case O_ALLOW_ERRORS: o->allow_errors = true; break;
    case O_POLICY_NAME: e->policy_name = arg; break;
    case O_POLICY_KEY: e->policy_key_b64 = arg; break;
    case O_BATCH:
        r = num("batch", arg, 1, 1000, &v);
        e->batch = (unsigned)v;
        break;
    case O_MODE:
        r = parse_choice("mode", arg, modes, 2, &c);
        e->update = c == 1;
        break;
    default: r = 2;
    }
    return r;
}

static int check_opts(struct bench_opts *o, bool enroll)
{
    bool port_given = o->port != NULL;

    if (!port_given)
        o->port = o->transport == TR_MQTT && !enroll ? "8883" : "443";
    if (o->ca_file == NULL && !o->insecure)
        return bad("--ca FILE is required (or --insecure)");
    if (!enroll && o->scope == NULL)
        return bad("--scope is required");
    if (o->scope != NULL && strlen(o->scope) > PROV_MAX_SCOPE)
        return bad("--scope is too long");
    if (strlen(o->prefix) + 20 > PROV_MAX_REG_ID)
        return bad("--prefix is too long");
    if (o->att == ATT_TPM && o->transport == TR_MQTT)
        return bad("TPM attestation works over HTTPS only (as in every DPS SDK)");
    if (o->idle_mqtt > 0 && o->transport != TR_MQTT)
        return bad("--idle-mqtt needs --transport mqtt");
    if (o->idle_mqtt > 0 && o->count < o->idle_mqtt)
        o->count = o->idle_mqtt;
    if (o->duration > 0 && o->warmup >= o->duration)
        return bad("--warmup must be shorter than --duration");
    if ((o->x509_ca_cert == NULL) != (o->x509_ca_key == NULL) ||
        (o->x509_int_cert == NULL) != (o->x509_int_key == NULL))
        return bad("--x509-*-cert and --x509-*-key go together");
    if (o->key_b64 != NULL && o->group_key_b64 != NULL)
        return bad("--key and --group-key exclude each other");
    if (o->att == ATT_SYMKEY && o->key_b64 == NULL && o->group_key_b64 == NULL)
        return bad("symmetric key needs --key or --group-key");
    return 0;
}

/* ---- the report ---- */

static json_t *error_kinds(const struct bench_stats *s)
{
    json_t *k = json_object();

    for (size_t i = 0; i < s->nkinds; i++)
        json_object_set_new(k, s->kinds[i].name, json_integer((json_int_t)s->kinds[i].n));
    if (s->other_kinds > 0)
        json_object_set_new(k, "other", json_integer((json_int_t)s->other_kinds));
    return k;
}

static const char *transport_name(const struct bench_opts *o)
{
    return o->transport == TR_MQTT ? "mqtt" : "https";
}

static const char *att_name(const struct bench_opts *o)
{
    return o->att == ATT_X509 ? "x509" : o->att == ATT_TPM ? "tpm" : "symkey";
}

static double rate_of(const struct run_result *r)
{
    return r->elapsed > 0 ? (double)r->stats.assigned / r->elapsed : 0;
}

static void print_json(const struct bench_opts *o, const struct run_result *r)
{
    const struct bench_stats *s = &r->stats;
    json_t *j;
    char *text;

    if (o->idle_mqtt > 0) {
        j = json_pack("{s:s, s:I, s:I, s:I, s:f, s:I, s:I, s:o}", "mode", "idle-mqtt",
                      "connections", (json_int_t)o->idle_mqtt, "connected",
                      (json_int_t)r->idle_connected, "errors", (json_int_t)s->errors, "connect_s",
                      r->elapsed, "server_vmhwm_kb", (json_int_t)r->server_hwm_kb,
                      "server_vmrss_kb", (json_int_t)r->server_rss_kb, "error_kinds",
                      error_kinds(s));
    } else {
        double reqs = s->assigned_total ? (double)s->requests / (double)s->assigned_total : 0;

        j = json_pack(
            "{s:s, s:s, s:I, s:I, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:I, s:o,"
            " s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:f}",
            "transport", transport_name(o), "attestation", att_name(o), "concurrency",
            (json_int_t)o->concurrency, "threads", (json_int_t)o->threads, "elapsed_s", r->elapsed,
            "assigned", (json_int_t)s->assigned, "assigned_total", (json_int_t)s->assigned_total,
            "rate", rate_of(r), "p50_ms", stats_pct_ms(s, 50), "p90_ms", stats_pct_ms(s, 90),
            "p99_ms", stats_pct_ms(s, 99), "max_ms", stats_pct_ms(s, 100), "errors",
            (json_int_t)s->errors, "error_kinds", error_kinds(s), "started", (json_int_t)s->started,
            "requests", (json_int_t)s->requests, "polls", (json_int_t)s->polls,
            "requests_per_registration", reqs, "handshakes", (json_int_t)s->handshakes, "resumed",
            (json_int_t)s->resumed, "tickets", (json_int_t)s->tickets, "retry_after_waits",
            (json_int_t)s->retry_after_waits, "client_cpu_s", r->client_cpu);
        if (j != NULL && r->server_cpu >= 0) {
            json_object_set_new(j, "server_cpu_s", json_real(r->server_cpu));
            json_object_set_new(
                j, "server_cpu_ms_per_reg",
                json_real(s->assigned ? r->server_cpu * 1000.0 / (double)s->assigned : 0));
        }
        if (j != NULL && r->server_hwm_kb >= 0) {
            json_object_set_new(j, "server_vmhwm_kb", json_integer(r->server_hwm_kb));
            json_object_set_new(j, "server_vmrss_kb", json_integer(r->server_rss_kb));
        }
    }
    if (j != NULL && o->label != NULL)
        json_object_set_new(j, "label", json_string(o->label));
    text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    printf("%s\n", text ? text : "{\"error\":\"out of memory\"}");
    free(text);
    json_decref(j);
}

static void print_text(const struct bench_opts *o, const struct run_result *r)
{
    const struct bench_stats *s = &r->stats;

    printf("prov-bench%s%s: %s %s against %s:%s, scope %s\n", o->label ? " " : "",
           o->label ? o->label : "", transport_name(o), att_name(o), o->host, o->port, o->scope);
    if (o->idle_mqtt > 0) {
        printf("  idle MQTT connections  %lu of %u up in %.1f s\n", r->idle_connected, o->idle_mqtt,
               r->elapsed);
        if (r->server_hwm_kb >= 0)
            printf("  server memory          VmHWM %.1f MB, VmRSS %.1f MB\n",
                   (double)r->server_hwm_kb / 1024.0, (double)r->server_rss_kb / 1024.0);
    } else {
        printf("  devices in flight      %u (%u thread%s), %s\n", o->concurrency, o->threads,
               o->threads == 1 ? "" : "s",
               o->ignore_retry_after ? "Retry-After ignored" : "Retry-After honoured");
        printf("  assigned               %lu in %.2f s: %.1f registrations/s\n", s->assigned,
               r->elapsed, rate_of(r));
        printf("  latency (ms)           p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n",
               stats_pct_ms(s, 50), stats_pct_ms(s, 90), stats_pct_ms(s, 99), stats_pct_ms(s, 100));
        printf("  requests               %lu (%lu polls), TLS handshakes %lu, resumed %lu, "
               "session tickets offered %lu\n",
               s->requests, s->polls, s->handshakes, s->resumed, s->tickets);
        printf("  CPU                    prov-bench %.2f s", r->client_cpu);
        if (r->server_cpu >= 0)
            printf(", server %.2f s (%.3f ms per registration)", r->server_cpu,
                   s->assigned ? r->server_cpu * 1000.0 / (double)s->assigned : 0);
        printf("\n");
    }
    printf("  errors                 %lu\n", s->errors);
    for (size_t i = 0; i < s->nkinds; i++)
        printf("    %-40s %lu\n", s->kinds[i].name, s->kinds[i].n);
    if (s->other_kinds > 0)
        printf("    %-40s %lu\n", "other", s->other_kinds);
}

static int run_main(struct bench_opts *o)
{
    struct run_result r;
    char err[512] = "";
    int rc;

    if (bench_run(o, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "prov-bench: %s\n", err);
        stats_free(&r.stats);
        return 1;
    }
    if (o->json)
        print_json(o, &r);
    else
        print_text(o, &r);
    if (o->idle_mqtt > 0)
        rc = r.idle_connected == o->idle_mqtt && r.stats.errors == 0 ? 0 : 1;
    else
        rc = r.stats.assigned_total == 0 || (r.stats.errors > 0 && !o->allow_errors) ? 1 : 0;
    stats_free(&r.stats);
    return rc;
}

int main(int argc, char **argv)
{
    struct bench_opts o = {
        .host = "127.0.0.1",
        .prefix = "dev-",
        .count = 1000,
        .stride = 1,
        .concurrency = 0,
        .threads = 1,
        .timeout = 30,
        .max_polls = 1000,
    };
    struct enroll_opts e = {.policy_name = "provisioningserviceowner"};
    bool enroll = false;
    int id, r;

    if (argc > 1 && strcmp(argv[1], "enroll") == 0) {
        enroll = true;
        argv++;
        argc--;
    } else if (argc > 1 && strcmp(argv[1], "run") == 0) {
        argv++;
        argc--;
    }
    while ((id = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        if (id == O_HELP) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (id == '?')
            return 2;
        if ((r = set_opt(id, optarg, &o, &e)) != 0)
            return r;
    }
    if (optind < argc)
        return bad("unexpected argument '%s'", argv[optind]);
    if (o.concurrency == 0)
        o.concurrency = enroll ? 4 : 16;
    if ((r = check_opts(&o, enroll)) != 0)
        return r;
    signal(SIGPIPE, SIG_IGN);
    if (enroll)
        return enroll_main(&o, &e);
    return run_main(&o);
}
