/*
 * provd configuration: one table of options drives the config file
 * ("key value" lines, '#' comments), the command-line flags (--key value) and
 * --help. Flags override the file; a repeatable flag given on the command line
 * replaces the file's list for that key.
 */
#ifndef PROV_SERVER_CONFIG_H
#define PROV_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_LIST 32

/* Service-API rights, as DPS names them. */
enum policy_rights {
    RIGHT_SERVICE_CONFIG = 1 << 0,
    RIGHT_ENROLLMENT_READ = 1 << 1,
    RIGHT_ENROLLMENT_WRITE = 1 << 2,
    RIGHT_DEVICE_CONNECT = 1 << 3,
    RIGHT_REGISTRATION_READ = 1 << 4,
    RIGHT_REGISTRATION_WRITE = 1 << 5,
    RIGHT_ALL = (1 << 6) - 1,
};

struct cfg_policy {
    char name[129];
    uint8_t key[64];
    size_t keylen;
    unsigned rights;
};

struct hub_connector_ops;

struct cfg_hub {
    char hostname[256];
    unsigned weight;              /* allocation weight 1..1000, default 1 */
    bool apply_allocation_policy; /* false: only used when an enrollment names it */
    char url[1024];               /* connector URL ("" = record); may hold a password */
    /* set at start-up by hub_open_all (assign.c); NULL ops = record */
    const struct hub_connector_ops *ops;
    void *state;
};

/* hub-weight / hub-apply-allocation-policy lines, resolved once all hubs are known */
struct cfg_hub_attr {
    char hostname[256];
    bool is_weight;
    unsigned weight;
    bool apply;
};

struct cfg_listen {
    char host[64];
    char port[8];
};

struct config {
    struct cfg_listen listen[CFG_MAX_LIST];
    size_t nlisten;
    struct cfg_listen mqtt_listen[CFG_MAX_LIST]; /* MQTT over TLS; none unless configured */
    size_t nmqtt_listen;
    char tls_cert[1024];
    char tls_key[1024];
    char data_dir[1024];
    char scopes[CFG_MAX_LIST][65];
    size_t nscopes;
    struct cfg_policy policies[CFG_MAX_LIST];
    size_t npolicies;
    struct cfg_hub hubs[CFG_MAX_LIST];
    size_t nhubs;
    struct cfg_hub_attr hub_attrs[2 * CFG_MAX_LIST];
    size_t nhub_attrs;
    int assigners;                 /* threads for hub operations and webhooks, default 4 */
    int custom_allocation_timeout; /* milliseconds, default 5000 */
    char webhook_ca[1024];         /* extra CA file for https webhooks, "" = system store */
    int workers;        /* 0 = one per core */
    int retry_after;    /* seconds, Retry-After on 202 */
    int log_level;
};

/*
 * Parses argv (and the --config file it names). On --help or --version prints
 * to stdout and sets *exit_now = 0. On error writes a one-line message naming
 * the flag or key into err and returns PROV_EINVAL (provd exits 2).
 */
int config_load(struct config *cfg, int argc, char **argv, bool *exit_now, char *err,
                size_t errlen);

/* Wipes policy keys and hub connector URLs (they may hold passwords). */
void config_clear(struct config *cfg);

/* "EnrollmentRead,EnrollmentWrite" -> bits; PROV_EINVAL on an unknown name. */
int config_parse_rights(const char *s, unsigned *out);

/* The linked hub whose host name equals host (case-insensitively), or NULL (also for NULL). */
const struct cfg_hub *config_find_hub(const struct config *cfg, const char *host);

/* Finds the configured scope equal (case-insensitively) to s, or NULL. */
const char *config_find_scope(const struct config *cfg, const char *s);

#endif
