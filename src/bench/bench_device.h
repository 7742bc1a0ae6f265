/*
 * prov-bench internals shared by the driver (bench_run.c) and the device
 * protocols (bench_http.c, bench_mqtt.c): one struct device per concurrency
 * slot, reused for device after device, each on its own TLS connection.
 */
#ifndef PROV_BENCH_DEVICE_H
#define PROV_BENCH_DEVICE_H

#include <pthread.h>
#include <stdatomic.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>

#include "bench.h"

struct bench_shared {
    const struct bench_opts *o;
    struct bench_creds creds;
    struct sockaddr_storage sa;
    socklen_t salen;
    atomic_ulong next_seq; /* next device to start (all threads) */
    atomic_ulong idle_connected;
    atomic_ulong idle_failed;
    double t0, t_warm, t_stop; /* monotonic seconds; t_stop = 0 in count mode */
};

struct bench_thread {
    struct bench_shared *sh;
    int index;
    struct event_base *base;
    SSL_CTX *ctx;
    struct device *slots;
    unsigned nslots;
    unsigned active;    /* slots with a device in flight (or held, idle mode) */
    unsigned next_slot; /* idle mode: the next slot never started */
    double t_last;      /* when the last device finished */
    struct bench_stats stats;
    pthread_t thread;
};

/* What the protocol modules implement. */
struct dev_proto {
    void (*connected)(struct device *d); /* TLS is up */
    void (*readable)(struct device *d);  /* bytes in bufferevent_get_input(d->bev) */
    int (*eof)(struct device *d);        /* peer closed; 0 if handled, -1 = error "closed" */
    void (*wait_done)(struct device *d); /* the wait timer fired */
    void (*reset)(struct device *d);     /* free per-device protocol state */
};

extern const struct dev_proto http_proto;
extern const struct dev_proto mqtt_proto;

struct device {
    struct bench_thread *th;
    const struct dev_proto *proto;
    unsigned long seq;   /* sequence number of this attempt */
    unsigned long index; /* pool index */
    char rid[PROV_MAX_REG_ID + 1];
    struct bufferevent *bev;
    struct event *tcp;      /* the TCP connect in progress (fd below), before TLS */
    int fd;                 /* socket while tcp is pending, else -1 */
    struct event *wait;     /* Retry-After waits, idle pings */
    struct event *deadline; /* --timeout */
    bool in_use;
    bool connected;
    bool idle;    /* idle mode: hold the connection after SUBACK */
    bool restart; /* the wait timer starts the slot's next device */
    double t_start;
    unsigned polls;
    char *sas; /* Authorization / MQTT password, or NULL */
    char opid[160];
    /* HTTPS */
    struct hresp resp;
    int http_step;
    /* MQTT */
    int mqtt_step;
    uint16_t packet_id;
    unsigned long req_rid; /* $rid of the request in flight */
    struct tpm_dev *tpm;   /* the device's keys (TPM attestation), or NULL */
};

double bench_now(void);

/* Ends the device: counts the outcome and starts the slot's next device. */
void dev_finish(struct device *d, enum dev_outcome outcome, const char *kind_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Arms the wait timer for seconds (0 = run on the next loop turn). */
void dev_wait(struct device *d, double seconds);
/* Opens a new connection for the same device (after the server closed one). */
int dev_reconnect(struct device *d);

/*
 * An answer carrying an operation (HTTP 200/202, MQTT res/200 or res/202):
 * JUDGE_DONE when the device finished (assigned, or a failed status, counted
 * as an error), JUDGE_POLL to poll now, JUDGE_WAIT to poll after *wait
 * seconds (the Retry-After, unless --ignore-retry-after). Sets d->opid.
 */
enum judge { JUDGE_DONE, JUDGE_POLL, JUDGE_WAIT };
enum judge dev_judge(struct device *d, const json_t *j, int retry_after, int *wait);
/* Finishes the device with the error kind "<transport> <status> <errorCode>". */
void dev_refused(struct device *d, const char *transport, int status, const json_t *j);

/* TPM (bench_tpm.c): the register body's "tpm" member, the challenge answer. */
int tpm_session_begin(struct device *d);
void tpm_session_end(struct device *d);
json_t *tpm_register_member(struct device *d);
/* The 401 challenge: activates the blob, signs the SAS into d->sas. 0, or -1. */
int tpm_challenge(struct device *d, const json_t *j);
/* An assigned result must carry a hub key blob the device can import. 0, or -1. */
int tpm_check_assigned(struct device *d, const json_t *j);

/* The JSON body of a register request (malloc'd): {"registrationId":...[,"tpm":...]}. */
char *dev_register_body(struct device *d);

#endif
