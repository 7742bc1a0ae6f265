/*
 * prov-bench: a load generator for provd (and for any server speaking the DPS
 * device protocol). It simulates many devices at once, each with its own TLS
 * connection (no session resumption), over HTTPS or MQTT, with symmetric-key,
 * X.509 or TPM attestation; see docs/benchmarks.md.
 *
 * Shared declarations of the prov-bench modules:
 *   prov_bench.c     main: options, subcommands, the report
 *   bench_run.c      the driver: threads, event loops, device slots, timing
 *   bench_http.c     the HTTPS device (register PUT, polling GETs) and the
 *                    HTTP response parser the enroll subcommand shares
 *   bench_mqtt.c     the MQTT device (and the idle-connection mode)
 *   bench_mqtt_wire.c a minimal MQTT 3.1.1 client encoder and decoder
 *   bench_creds.c    device credentials: SAS tokens, generated X.509 leaves
 *   bench_tpm.c      software TPM device (EK/SRK keys, activation in software)
 *   bench_stats.c    latency, counters and errors by kind
 *   bench_tls.c      client TLS contexts and non-blocking connects
 *   bench_enroll.c   the enroll subcommand (bulk service API)
 */
#ifndef PROV_BENCH_BENCH_H
#define PROV_BENCH_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "../common/limits.h"

#define BENCH_API_VERSION "2019-03-31"

enum bench_transport { TR_HTTPS, TR_MQTT };
enum bench_att { ATT_SYMKEY, ATT_X509, ATT_TPM };

struct bench_opts {
    const char *host;
    const char *port;
    const char *bind_ip; /* local address of the client sockets, or NULL */
    const char *scope;
    const char *ca_file; /* trusted CA of the server certificate */
    bool insecure;       /* no server certificate check */
    enum bench_transport transport;
    enum bench_att att;
    /* registration ids: prefix (first + i * stride), i = 0 .. count-1 */
    const char *prefix;
    unsigned long count;
    unsigned long first;
    unsigned long stride;
    double duration; /* seconds; 0 = every device once */
    double warmup;   /* seconds not counted (duration mode) */
    unsigned concurrency;
    unsigned threads;
    double timeout; /* per device, seconds */
    unsigned max_polls;
    bool ignore_retry_after;
    /* symmetric key: one key for all, or per-device keys derived from group_key */
    const char *key_b64;
    const char *group_key_b64;
    /* X.509: a CA to issue an intermediate under, or an intermediate; creds file */
    const char *x509_ca_cert, *x509_ca_key;
    const char *x509_int_cert, *x509_int_key;
    const char *x509_creds;
    /* TPM: the file holding the devices' EK and SRK keys */
    const char *tpm_keys;
    /* idle MQTT connections mode */
    unsigned idle_mqtt;
    double hold;          /* idle mode: seconds to hold the connections after the measurement */
    long server_pids[16]; /* for server CPU time and memory (summed over them) */
    size_t nserver_pids;
    bool json;
    bool quiet;
    bool allow_errors;
    const char *label;
};

/* ---- statistics (bench_stats.c) ---- */

#define STATS_MAX_KINDS 32

struct err_kind {
    char name[64];
    unsigned long n;
};

struct bench_stats {
    unsigned long started;
    unsigned long assigned;       /* within the measurement window */
    unsigned long assigned_total; /* including warmup and drain */
    unsigned long errors;
    unsigned long requests; /* HTTP requests or MQTT PUBLISHes */
    unsigned long polls;
    unsigned long handshakes;
    unsigned long resumed;
    unsigned long tickets;
    unsigned long retry_after_waits;
    struct err_kind kinds[STATS_MAX_KINDS];
    size_t nkinds;
    unsigned long other_kinds; /* errors beyond STATS_MAX_KINDS distinct kinds */
    uint32_t *lat_us;          /* latencies of the window's registrations */
    size_t nlat, caplat;
};

void stats_error(struct bench_stats *s, const char *kind);
void stats_latency(struct bench_stats *s, double seconds);
/* Adds src into dst (src is left as it was). 0 or PROV_ENOMEM. */
int stats_merge(struct bench_stats *dst, const struct bench_stats *src);
void stats_free(struct bench_stats *s);
/* Sorts the latencies; percentile p (0..100) in milliseconds, 0 when none. */
void stats_sort(struct bench_stats *s);
double stats_pct_ms(const struct bench_stats *s, double p);

/* ---- credentials (bench_creds.c) ---- */

struct x509_cred {
    X509 *leaf;
    EVP_PKEY *key;
};

struct tpm_dev;

struct bench_creds {
    enum bench_att att;
    unsigned char *group_key; /* decoded, for derived keys; wiped */
    size_t group_key_len;
    const char *key_b64; /* one key for all devices */
    X509 *intermediate;
    struct x509_cred *x509; /* [count], by device index */
    struct tpm_dev **tpm;   /* [count], by device index */
    unsigned long count;
};

/*
 * A credentials file written whole or not at all (bench_creds.c): open writes
 * PATH.tmp (mode 0600, its name in tmp); close renames it to path when ok and
 * every write went through, else removes it. err says why on failure.
 */
FILE *creds_file_open(const char *path, char *tmp, size_t tmplen, char *err, size_t errlen);
int creds_file_close(FILE *f, bool ok, const char *tmp, const char *path, const char *what,
                     char *err, size_t errlen);

/* TPM devices (bench_tpm.c): their EK/SRK keys from --tpm-keys (made when missing). */
int tpm_creds_init(struct bench_creds *c, const struct bench_opts *o, char *err, size_t errlen);
void tpm_creds_free(struct bench_creds *c);
/* {"endorsementKey": ..., "storageRootKey": ...} of device i, for its enrollment. */
struct json_t *tpm_enrollment_member(const struct bench_creds *c, unsigned long i);

/* Registration id of pool index i into out (PROV_MAX_REG_ID + 1 bytes). */
void bench_rid(const struct bench_opts *o, unsigned long i, char *out, size_t outlen);

/* Loads or makes the credentials of the whole pool; message in err on failure. */
int creds_init(struct bench_creds *c, const struct bench_opts *o, char *err, size_t errlen);
void creds_free(struct bench_creds *c);
/*
 * The SAS token of device i (symmetric key; TPM passes its own key): "SharedAccessSignature
 * sr=...". Caller frees. NULL on error.
 */
char *creds_sas(const struct bench_creds *c, const struct bench_opts *o, const char *rid,
                const unsigned char *key, size_t keylen);
/* The device key (derived or shared) as raw bytes into out[64]; its length, or -1. */
int creds_symkey(const struct bench_creds *c, const char *rid, unsigned char *out);

/*
 * X.509 generation shared with the enroll subcommand: an EC P-256 key, an
 * intermediate CA under (ca, cakey), a leaf (CN = rid, clientAuth) under it.
 */
EVP_PKEY *x509_gen_key(void);
X509 *x509_make_intermediate(X509 *ca, EVP_PKEY *cakey, EVP_PKEY *key);
X509 *x509_make_leaf(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *key, const char *cn);
/* The PEM text of a certificate (caller frees), or NULL. */
char *x509_pem(X509 *cert);
/* Writes intermediate + every leaf and key of c to path (mode 0600). */
int creds_save_x509(const struct bench_creds *c, const char *path, char *err, size_t errlen);

/* ---- TLS (bench_tls.c) ---- */

/* A client context: verify the server against ca_file (unless insecure), no resumption. */
SSL_CTX *tls_client_ctx(const struct bench_opts *o, char *err, size_t errlen);
/* Sets the SNI of a new connection to --host unless that is an IP address (as SDKs do). */
void tls_set_sni(SSL *ssl, const char *host);
/* Resolves host:port once; 0 or -1 with err. */
int tls_resolve(const char *host, const char *port, struct sockaddr_storage *sa, socklen_t *salen,
                char *err, size_t errlen);
/* Non-blocking TCP connect (TCP_NODELAY), optionally from bind_ip; fd or -errno. */
int tls_connect_fd(const struct sockaddr_storage *sa, socklen_t salen, const char *bind_ip);
/* The first queued OpenSSL error reason (static buffer per thread), or fallback. */
const char *tls_error_reason(unsigned long e, const char *fallback);

/* ---- HTTP response parsing (bench_http.c) ---- */

#define HRESP_MAX_BODY (1024 * 1024)

struct hresp {
    http_parser parser;
    int status;
    int retry_after; /* -1 when absent */
    bool complete;
    bool keep_alive;
    bool failed;
    char *body;
    size_t body_len, body_cap;
    /* header being parsed */
    char field[32];
    size_t field_len;
    char value[64];
    size_t value_len;
    bool in_value;
};

void hresp_init(struct hresp *h);
/* Feeds bytes; 1 when a whole response is in, 0 for more, -1 malformed. */
int hresp_feed(struct hresp *h, const char *data, size_t len);
/* The peer closed: 1 when that completed the response, else -1. */
int hresp_eof(struct hresp *h);
void hresp_free(struct hresp *h);

/* ---- the driver (bench_run.c) and devices (bench_http.c, bench_mqtt.c) ---- */

struct bench_thread;
struct device;

enum dev_outcome { DEV_ASSIGNED, DEV_ERROR, DEV_IDLE };

struct run_result {
    struct bench_stats stats;
    double elapsed;     /* seconds of the measurement window */
    double client_cpu;  /* seconds of CPU of prov-bench in the window */
    double server_cpu;  /* seconds of CPU of --server-pid in the window, -1 unknown */
    long server_hwm_kb; /* VmHWM of --server-pid at the end, -1 unknown */
    long server_rss_kb; /* VmRSS */
    unsigned long idle_connected;
};

int bench_run(const struct bench_opts *o, struct run_result *res, char *err, size_t errlen);

#endif
