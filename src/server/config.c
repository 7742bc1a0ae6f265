#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/util.h"

#ifndef PROVD_VERSION
#define PROVD_VERSION "0.0.0"
#endif

enum cfg_kind {
    K_LISTEN,
    K_MQTT_LISTEN,
    K_PATH,
    K_SCOPE,
    K_POLICY,
    K_HUB,
    K_HUB_WEIGHT,
    K_HUB_APPLY,
    K_INT,
    K_LOGLEVEL
};

struct cfg_option {
    const char *name;
    enum cfg_kind kind;
    size_t offset; /* for K_PATH and K_INT */
    long min, max;
    bool repeatable;
    const char *arg;
    const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct cfg_option options[] = {
    {"listen", K_LISTEN, 0, 0, 0, true, "ADDR:PORT",
     "HTTPS listener for the device and service APIs (default 127.0.0.1:443)"},
    {"mqtt-listen", K_MQTT_LISTEN, 0, 0, 0, true, "ADDR[:PORT]",
     "MQTT-over-TLS listener for the device API (port 8883 when omitted; none by default)"},
    {"tls-cert", K_PATH, OFF(tls_cert), 0, 0, false, "FILE", "server certificate chain (PEM)"},
    {"tls-key", K_PATH, OFF(tls_key), 0, 0, false, "FILE", "server private key (PEM)"},
    {"data-dir", K_PATH, OFF(data_dir), 0, 0, false, "DIR",
     "where the SQLite store lives (default ./provd-data)"},
    {"id-scope", K_SCOPE, 0, 0, 0, true, "SCOPE", "an ID scope this instance serves"},
    {"policy", K_POLICY, 0, 0, 0, true, "NAME=BASE64KEY[:RIGHT,...]",
     "service-API shared access policy; no rights listed means all rights"},
    {"hub", K_HUB, 0, 0, 0, true, "HOSTNAME[=CONNECTOR-URL]",
     "a linked hub; the URL (mosquitto://, mosquittos://, https://) picks its connector"},
    {"hub-weight", K_HUB_WEIGHT, 0, 1, 1000, true, "HOSTNAME=N",
     "allocation weight of a linked hub, 1..1000 (default 1)"},
    {"hub-apply-allocation-policy", K_HUB_APPLY, 0, 0, 0, true, "HOSTNAME=true|false",
     "false: the hub takes devices only from enrollments that name it (default true)"},
    {"assigners", K_INT, OFF(assigners), 1, 64, false, "N",
     "threads for hub connectors and webhooks (default 4)"},
    {"custom-allocation-timeout", K_INT, OFF(custom_allocation_timeout), 100, 60000, false, "MS",
     "how long a custom allocation webhook may take (default 5000)"},
    {"webhook-ca", K_PATH, OFF(webhook_ca), 0, 0, false, "FILE",
     "CA certificates (PEM) trusted for https webhooks besides the system store"},
    {"workers", K_INT, OFF(workers), 0, 256, false, "N", "worker threads (default: one per core)"},
    {"retry-after", K_INT, OFF(retry_after), 1, 300, false, "SECONDS",
     "Retry-After sent with 202 answers (default 2)"},
    {"log-level", K_LOGLEVEL, 0, 0, 0, false, "LEVEL", "error, warn, info (default) or debug"},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const struct {
    const char *name;
    unsigned bit;
} right_names[] = {
    {"ServiceConfig", RIGHT_SERVICE_CONFIG},
    {"EnrollmentRead", RIGHT_ENROLLMENT_READ},
    {"EnrollmentWrite", RIGHT_ENROLLMENT_WRITE},
    {"DeviceConnect", RIGHT_DEVICE_CONNECT},
    {"RegistrationStatusRead", RIGHT_REGISTRATION_READ},
    {"RegistrationStatusWrite", RIGHT_REGISTRATION_WRITE},
};

int config_parse_rights(const char *s, unsigned *out)
{
    unsigned bits = 0;

    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        bool found = false;

        while (len > 0 && *s == ' ') {
            s++;
            len--;
        }
        while (len > 0 && s[len - 1] == ' ')
            len--;
        for (size_t i = 0; i < sizeof(right_names) / sizeof(right_names[0]); i++) {
            if (strlen(right_names[i].name) == len && str_ieqn(s, right_names[i].name, len)) {
                bits |= right_names[i].bit;
                found = true;
            }
        }
        if (!found)
            return PROV_EINVAL;
        s = end ? end + 1 : s + strlen(s);
    }
    *out = bits;
    return 0;
}

const char *config_find_scope(const struct config *cfg, const char *s)
{
    for (size_t i = 0; i < cfg->nscopes; i++) {
        if (str_ieq(cfg->scopes[i], s))
            return cfg->scopes[i];
    }
    return NULL;
}

static int set_listen(struct config *cfg, const char *v, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    struct cfg_listen *l;
    long port;

    if (cfg->nlisten == CFG_MAX_LIST) {
        snprintf(err, errlen, "listen: too many listeners");
        return PROV_EINVAL;
    }
    l = &cfg->listen[cfg->nlisten];
    if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof(l->host) ||
        parse_long(colon + 1, 1, 65535, &port) != 0) {
        snprintf(err, errlen, "listen: '%s' is not ADDR:PORT", v);
        return PROV_EINVAL;
    }
    memcpy(l->host, v, (size_t)(colon - v));
    l->host[colon - v] = '\0';
    if (l->host[0] == '[' && l->host[strlen(l->host) - 1] == ']') {
        memmove(l->host, l->host + 1, strlen(l->host));
        l->host[strlen(l->host) - 1] = '\0';
    }
    snprintf(l->port, sizeof(l->port), "%ld", port);
    cfg->nlisten++;
    return 0;
}

/*
 * ADDR[:PORT] for MQTT: IPv4 or a host name with an optional port, [IPv6] with
 * an optional port, or a bare IPv6 address (more than one colon) without one.
 */
static int set_mqtt_listen(struct config *cfg, const char *v, char *err, size_t errlen)
{
    struct cfg_listen *l;
    const char *host = v, *port = NULL, *colon = strchr(v, ':');
    size_t hlen;
    long n = 8883;

    if (cfg->nmqtt_listen == CFG_MAX_LIST) {
        snprintf(err, errlen, "mqtt-listen: too many listeners");
        return PROV_EINVAL;
    }
    l = &cfg->mqtt_listen[cfg->nmqtt_listen];
    if (v[0] == '[') {
        const char *rb = strchr(v, ']');

        if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
            goto bad;
        host = v + 1;
        hlen = (size_t)(rb - host);
        port = rb[1] == ':' ? rb + 2 : NULL;
    } else if (colon != NULL && strchr(colon + 1, ':') == NULL) {
        hlen = (size_t)(colon - v);
        port = colon + 1;
    } else {
        hlen = strlen(v); /* no colon, or a bare IPv6 address */
    }
    if (hlen == 0 || hlen >= sizeof(l->host) || memchr(host, ']', hlen) != NULL ||
        (port != NULL && parse_long(port, 1, 65535, &n) != 0))
        goto bad;
    memcpy(l->host, host, hlen);
    l->host[hlen] = '\0';
    snprintf(l->port, sizeof(l->port), "%ld", n);
    cfg->nmqtt_listen++;
    return 0;
bad:
    snprintf(err, errlen, "mqtt-listen: '%s' is not ADDR[:PORT]", v);
    return PROV_EINVAL;
}

static int set_policy(struct config *cfg, const char *v, char *err, size_t errlen)
{
    const char *eq = strchr(v, '=');
    const char *colon;
    struct cfg_policy *p;
    char keytext[128];
    uint8_t keybuf[3 * sizeof(keytext) / 4 + 3];
    size_t klen;
    int n;

    if (cfg->npolicies == CFG_MAX_LIST) {
        snprintf(err, errlen, "policy: too many policies");
        return PROV_EINVAL;
    }
    p = &cfg->policies[cfg->npolicies];
    if (eq == NULL || eq == v || (size_t)(eq - v) >= sizeof(p->name)) {
        snprintf(err, errlen, "policy: expected NAME=BASE64KEY[:RIGHT,...]");
        return PROV_EINVAL;
    }
    memcpy(p->name, v, (size_t)(eq - v));
    p->name[eq - v] = '\0';
    colon = strchr(eq + 1, ':');
    klen = colon ? (size_t)(colon - eq - 1) : strlen(eq + 1);
    if (klen == 0 || klen >= sizeof(keytext)) {
        snprintf(err, errlen, "policy %s: key is not base64 of 16 to 64 bytes", p->name);
        return PROV_EINVAL;
    }
    memcpy(keytext, eq + 1, klen);
    keytext[klen] = '\0';
    /* decode into a buffer that fits any text that fits keytext; p->key holds only 64 */
    n = b64_decode(keytext, klen, keybuf);
    prov_cleanse(keytext, sizeof(keytext));
    if (n < 16 || n > (int)sizeof(p->key)) {
        prov_cleanse(keybuf, sizeof(keybuf));
        snprintf(err, errlen, "policy %s: key is not base64 of 16 to 64 bytes", p->name);
        return PROV_EINVAL;
    }
    memcpy(p->key, keybuf, (size_t)n);
    prov_cleanse(keybuf, sizeof(keybuf));
    p->keylen = (size_t)n;
    p->rights = RIGHT_ALL;
    if (colon != NULL && config_parse_rights(colon + 1, &p->rights) != 0) {
        snprintf(err, errlen, "policy %s: unknown right in '%s'", p->name, colon + 1);
        return PROV_EINVAL;
    }
    for (size_t i = 0; i < cfg->npolicies; i++) {
        if (str_ieq(cfg->policies[i].name, p->name)) {
            snprintf(err, errlen, "policy %s: defined twice", p->name);
            return PROV_EINVAL;
        }
    }
    cfg->npolicies++;
    return 0;
}

static bool hostname_ok(const char *h)
{
    size_t len = strlen(h);

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];

        if (!(isalnum(c) || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool connector_scheme_ok(const char *url)
{
    static const char *const schemes[] = {"mosquitto://", "mosquittos://", "https://", "http://"};

    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        if (strncmp(url, schemes[i], strlen(schemes[i])) == 0)
            return true;
    }
    return false;
}

const struct cfg_hub *config_find_hub(const struct config *cfg, const char *host)
{
    for (size_t i = 0; host != NULL && i < cfg->nhubs; i++) {
        if (str_ieq(cfg->hubs[i].hostname, host))
            return &cfg->hubs[i];
    }
    return NULL;
}

/* The same, for the parser, which still fills the hub in. */
static struct cfg_hub *find_hub(struct config *cfg, const char *host)
{
    return (struct cfg_hub *)config_find_hub(cfg, host);
}

static int set_hub(struct config *cfg, const char *v, char *err, size_t errlen)
{
    struct cfg_hub *h;
    const char *eq = strchr(v, '=');
    size_t len = eq ? (size_t)(eq - v) : strlen(v);

    if (cfg->nhubs == CFG_MAX_LIST) {
        snprintf(err, errlen, "hub: too many hubs");
        return PROV_EINVAL;
    }
    h = &cfg->hubs[cfg->nhubs];
    if (len >= sizeof(h->hostname)) {
        snprintf(err, errlen, "hub: host name too long");
        return PROV_EINVAL;
    }
    memcpy(h->hostname, v, len);
    h->hostname[len] = '\0';
    if (!hostname_ok(h->hostname)) {
        snprintf(err, errlen, "hub: '%s' is not a host name", h->hostname);
        return PROV_EINVAL;
    }
    str_lower(h->hostname);
    if (find_hub(cfg, h->hostname) != NULL) {
        snprintf(err, errlen, "hub: '%s' given twice", h->hostname);
        return PROV_EINVAL;
    }
    if (eq != NULL) {
        /* the URL may carry a password: never echo it */
        if (strlen(eq + 1) >= sizeof(h->url) || !connector_scheme_ok(eq + 1)) {
            snprintf(err, errlen,
                     "hub: the connector of '%s' must be a mosquitto://, mosquittos://, https:// "
                     "or http:// URL",
                     h->hostname);
            return PROV_EINVAL;
        }
        memcpy(h->url, eq + 1, strlen(eq + 1) + 1);
    }
    h->weight = 1;
    h->apply_allocation_policy = true;
    cfg->nhubs++;
    return 0;
}

static int set_hub_attr(struct config *cfg, const struct cfg_option *o, const char *v, char *err,
                        size_t errlen)
{
    const char *eq = strchr(v, '=');
    struct cfg_hub_attr *a;
    long n;

    if (cfg->nhub_attrs == sizeof(cfg->hub_attrs) / sizeof(cfg->hub_attrs[0])) {
        snprintf(err, errlen, "%s: given too often", o->name);
        return PROV_EINVAL;
    }
    a = &cfg->hub_attrs[cfg->nhub_attrs];
    memset(a, 0, sizeof(*a));
    if (eq == NULL || eq == v || (size_t)(eq - v) >= sizeof(a->hostname)) {
        snprintf(err, errlen, "%s: '%s' is not %s", o->name, v, o->arg);
        return PROV_EINVAL;
    }
    memcpy(a->hostname, v, (size_t)(eq - v));
    if (o->kind == K_HUB_WEIGHT) {
        if (parse_long(eq + 1, o->min, o->max, &n) != 0) {
            snprintf(err, errlen, "%s: weight '%s' is not a number in %ld..%ld", o->name, eq + 1,
                     o->min, o->max);
            return PROV_EINVAL;
        }
        a->is_weight = true;
        a->weight = (unsigned)n;
    } else if (str_ieq(eq + 1, "true") || str_ieq(eq + 1, "false")) {
        a->apply = str_ieq(eq + 1, "true");
    } else {
        snprintf(err, errlen, "%s: '%s' is not true or false", o->name, eq + 1);
        return PROV_EINVAL;
    }
    cfg->nhub_attrs++;
    return 0;
}

/* hub-weight and hub-apply-allocation-policy name hubs, which may be given in any order */
static int resolve_hub_attrs(struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nhub_attrs; i++) {
        const struct cfg_hub_attr *a = &cfg->hub_attrs[i];
        struct cfg_hub *h = find_hub(cfg, a->hostname);

        if (h == NULL) {
            snprintf(err, errlen, "--%s: '%s' is not a linked hub (--hub)",
                     a->is_weight ? "hub-weight" : "hub-apply-allocation-policy", a->hostname);
            return PROV_EINVAL;
        }
        if (a->is_weight)
            h->weight = a->weight;
        else
            h->apply_allocation_policy = a->apply;
    }
    return 0;
}

static int set_scope(struct config *cfg, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);

    if (cfg->nscopes == CFG_MAX_LIST) {
        snprintf(err, errlen, "id-scope: too many scopes");
        return PROV_EINVAL;
    }
    if (len == 0 || len > 64) {
        snprintf(err, errlen, "id-scope: '%s' must be 1 to 64 characters", v);
        return PROV_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)v[i]) && v[i] != '-' && v[i] != '_') {
            snprintf(err, errlen, "id-scope: '%s' may hold only letters, digits, - and _", v);
            return PROV_EINVAL;
        }
    }
    if (strcmp(v, "registrations") == 0 || str_ieq(v, "enrollments") ||
        str_ieq(v, "enrollmentGroups")) {
        snprintf(err, errlen, "id-scope: '%s' is reserved", v);
        return PROV_EINVAL;
    }
    if (config_find_scope(cfg, v) != NULL) {
        snprintf(err, errlen, "id-scope: '%s' given twice", v);
        return PROV_EINVAL;
    }
    memcpy(cfg->scopes[cfg->nscopes++], v, len + 1);
    return 0;
}

static void clear_list(struct config *cfg, enum cfg_kind kind)
{
    switch (kind) {
    case K_LISTEN: cfg->nlisten = 0; break;
    case K_MQTT_LISTEN: cfg->nmqtt_listen = 0; break;
    case K_SCOPE: cfg->nscopes = 0; break;
    case K_POLICY:
        prov_cleanse(cfg->policies, sizeof(cfg->policies));
        cfg->npolicies = 0;
        break;
    case K_HUB: cfg->nhubs = 0; break;
    case K_HUB_WEIGHT:
    case K_HUB_APPLY: {
        size_t n = 0;

        /* drop only the lines of this kind */
        for (size_t i = 0; i < cfg->nhub_attrs; i++) {
            if (cfg->hub_attrs[i].is_weight != (kind == K_HUB_WEIGHT))
                cfg->hub_attrs[n++] = cfg->hub_attrs[i];
        }
        cfg->nhub_attrs = n;
        break;
    }
    default: break;
    }
}

static int apply(struct config *cfg, const struct cfg_option *o, const char *v, char *err,
                 size_t errlen)
{
    long n;

    switch (o->kind) {
    case K_LISTEN: return set_listen(cfg, v, err, errlen);
    case K_MQTT_LISTEN: return set_mqtt_listen(cfg, v, err, errlen);
    case K_SCOPE: return set_scope(cfg, v, err, errlen);
    case K_POLICY: return set_policy(cfg, v, err, errlen);
    case K_HUB: return set_hub(cfg, v, err, errlen);
    case K_HUB_WEIGHT:
    case K_HUB_APPLY: return set_hub_attr(cfg, o, v, err, errlen);
    case K_PATH: {
        char *dst = (char *)cfg + o->offset;

        if (*v == '\0' || strlen(v) >= 1024) {
            snprintf(err, errlen, "%s: path must be 1 to 1023 characters", o->name);
            return PROV_EINVAL;
        }
        memcpy(dst, v, strlen(v) + 1); /* length checked above */
        return 0;
    }
    case K_INT:
        if (parse_long(v, o->min, o->max, &n) != 0) {
            snprintf(err, errlen, "%s: '%s' is not a number in %ld..%ld", o->name, v, o->min,
                     o->max);
            return PROV_EINVAL;
        }
        *(int *)((char *)cfg + o->offset) = (int)n;
        return 0;
    case K_LOGLEVEL: {
        enum log_level l;

        if (log_parse_level(v, &l) != 0) {
            snprintf(err, errlen, "log-level: '%s' is not error, warn, info or debug", v);
            return PROV_EINVAL;
        }
        cfg->log_level = (int)l;
        return 0;
    }
    }
    return PROV_EINVAL;
}

static const struct cfg_option *find_option(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    }
    return NULL;
}

static int load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int lineno = 0;
    int r = 0;

    if (f == NULL) {
        snprintf(err, errlen, "config: cannot open '%s': %s", path, strerror(errno));
        return PROV_EINVAL;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = line, *key, *val;
        const struct cfg_option *o;
        size_t len;

        lineno++;
        len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "config %s:%d: line too long", path, lineno);
            r = PROV_EINVAL;
            break;
        }
        while (len > 0 && isspace((unsigned char)line[len - 1]))
            line[--len] = '\0';
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        key = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (*p)
            *p++ = '\0';
        while (isspace((unsigned char)*p))
            p++;
        val = p;
        o = find_option(key);
        if (o == NULL) {
            snprintf(err, errlen, "config %s:%d: unknown key '%s'", path, lineno, key);
            r = PROV_EINVAL;
            break;
        }
        if (*val == '\0') {
            snprintf(err, errlen, "config %s:%d: '%s' needs a value", path, lineno, key);
            r = PROV_EINVAL;
            break;
        }
        if (apply(cfg, o, val, err, errlen) != 0) {
            char tmp[512];

            snprintf(tmp, sizeof(tmp), "config %s:%d: %s", path, lineno, err);
            snprintf(err, errlen, "%s", tmp);
            r = PROV_EINVAL;
            break;
        }
    }
    prov_cleanse(line, sizeof(line));
    fclose(f);
    return r;
}

static void usage(void)
{
    printf("usage: provd [--config FILE] [options]\n\n"
           "provd serves the Azure DPS-compatible device and service APIs.\n\n");
    printf("  --config FILE                  read options from FILE (\"key value\" lines)\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        char left[64];

        snprintf(left, sizeof(left), "--%s %s", options[i].name, options[i].arg);
        printf("  %-30s %s%s\n", left, options[i].help, options[i].repeatable ? " (repeatable)" : "");
    }
    printf("  --help                         this text\n"
           "  --version                      print the version\n");
}

int config_load(struct config *cfg, int argc, char **argv, bool *exit_now, char *err,
                size_t errlen)
{
    const char *config_path = NULL;
    bool seen[NOPTIONS] = {false};

    memset(cfg, 0, sizeof(*cfg));
    cfg->retry_after = 2;
    cfg->log_level = LOG_INFO;
    cfg->assigners = 4;
    cfg->custom_allocation_timeout = 5000;
    *exit_now = false;

    /* first pass: --help, --version, --config */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            *exit_now = true;
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("provd %s\n", PROVD_VERSION);
            *exit_now = true;
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--config: needs a FILE");
                return PROV_EINVAL;
            }
            config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
        }
    }
    if (config_path != NULL && load_file(cfg, config_path, err, errlen) != 0)
        return PROV_EINVAL;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val;
        char name[64];
        const char *eq;
        const struct cfg_option *o;

        if (strcmp(arg, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            continue;
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
            return PROV_EINVAL;
        }
        eq = strchr(arg, '=');
        if ((eq ? (size_t)(eq - arg) : strlen(arg)) - 2 >= sizeof(name)) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return PROV_EINVAL;
        }
        snprintf(name, sizeof(name), "%.*s", (int)((eq ? (size_t)(eq - arg) : strlen(arg)) - 2),
                 arg + 2);
        o = find_option(name);
        if (o == NULL) {
            snprintf(err, errlen, "unknown option '--%s' (see --help)", name);
            return PROV_EINVAL;
        }
        if (eq != NULL) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s: needs a value %s", o->name, o->arg);
                return PROV_EINVAL;
            }
            val = argv[++i];
        }
        if (!seen[o - options] && o->repeatable)
            clear_list(cfg, o->kind);
        seen[o - options] = true;
        if (apply(cfg, o, val, err, errlen) != 0) {
            char tmp[512];

            snprintf(tmp, sizeof(tmp), "--%s", err);
            snprintf(err, errlen, "%s", tmp);
            return PROV_EINVAL;
        }
    }

    if (cfg->nlisten == 0)
        (void)set_listen(cfg, "127.0.0.1:443", err, errlen);
    if (cfg->data_dir[0] == '\0')
        snprintf(cfg->data_dir, sizeof(cfg->data_dir), "provd-data");
    if (cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0') {
        snprintf(err, errlen, "%s: required (PEM file)", cfg->tls_cert[0] ? "--tls-key" : "--tls-cert");
        return PROV_EINVAL;
    }
    if (cfg->nscopes == 0) {
        snprintf(err, errlen, "--id-scope: at least one ID scope is required");
        return PROV_EINVAL;
    }
    return resolve_hub_attrs(cfg, err, errlen);
}

void config_clear(struct config *cfg)
{
    prov_cleanse(cfg->policies, sizeof(cfg->policies));
    for (size_t i = 0; i < CFG_MAX_LIST; i++)
        prov_cleanse(cfg->hubs[i].url, sizeof(cfg->hubs[i].url));
}
