/*
 * The transport-neutral registration pipeline: attest -> resolve enrollment ->
 * allocate -> persist -> answer. HTTPS (device_api.c) and, later, MQTT only
 * decode a struct reg_request and encode the struct reg_reply, so both behave
 * the same by construction.
 *
 * Durability: a device is told "assigned" only through an operation whose
 * registration record was committed by store->registration_commit (which
 * returns once the transaction is durable).
 */
#ifndef PROV_SERVER_REGISTRATION_H
#define PROV_SERVER_REGISTRATION_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/x509.h>

#include "config.h"

struct store;

/*
 * Six-digit DPS error codes of the device API: first three digits = HTTP
 * status. They share one numbering with the service API's (model.h) and the
 * HTTP layer's; docs/errors.md lists them all.
 */
enum dps_device_error {
    DPS_BAD_REQUEST = 400001,        /* malformed request */
    DPS_REGISTRATION_ID_MISMATCH = 400003,
    DPS_INVALID_BODY = 400004,
    DPS_INVALID_REGISTRATION_ID = 400005,
    DPS_UNSUPPORTED_ATTESTATION = 400008,
    DPS_CUSTOM_ALLOCATION_FAILED = 400009, /* webhook refused, failed, timed out, chose badly */
    DPS_HUB_NOT_SPECIFIED = 400208,  /* the C SDK knows this one */
    DPS_UNAUTHORIZED = 401002,
    DPS_CERTIFICATE_REFUSED = 401004, /* X.509: the message names the element and why */
    DPS_ENROLLMENT_DISABLED = 401003, /* told only after the device proved its credential */
    DPS_OPERATION_NOT_FOUND = 404002,
    DPS_REGISTRATION_NOT_FOUND = 404204,
    DPS_UNKNOWN_SCOPE = 404205,
    DPS_METHOD_NOT_ALLOWED = 405001,
    DPS_THROTTLED = 429001,          /* assigner queue full: retry later */
    DPS_INTERNAL = 500001,
    DPS_HUB_OPERATION_FAILED = 500210, /* a hub connector failed (in a failed operation) */
};

struct assigner;
struct committer;

struct reg_ctx {
    const struct config *cfg;
    struct store *store;       /* this thread's connection: reads, and commits without committer */
    struct assigner *assigner; /* for hub connectors and webhooks; NULL: record hubs only */
    struct committer *committer; /* group commit off the loop; NULL: commit on store */
};

struct reg_request {
    const char *scope;           /* the canonical configured scope */
    const char *registration_id; /* decoded and validated (id_is_valid) */
    const char *authorization;   /* SAS token as sent, or NULL */
    const json_t *body;          /* the DeviceRegistration object (borrowed), or NULL */
    X509 *peer_leaf;             /* TLS client certificate (borrowed), or NULL */
    STACK_OF(X509) *peer_chain;  /* further certificates the client sent (borrowed), or NULL */
    /* set by polls and status lookups: authenticate only, no result documents needed */
    bool auth_only;
    /* the transport can hold a poll until its commit is written (reply->hold_ticket) */
    bool may_hold;
};

struct reg_reply {
    int status;          /* 200, 202, or an error status */
    int error_code;      /* six-digit DPS code when status >= 400 */
    char message[512];   /* for the device; never secrets */
    char detail[512];    /* for the log only (may say more than the device may learn) */
    json_t *body;        /* success document, owned: release with reg_reply_release */
    int retry_after;     /* seconds, when > 0 */
    /*
     * Not 0: no answer yet; ask again once this committer ticket is written
     * (only when the request said may_hold; nothing else in the reply is set).
     */
    uint64_t hold_ticket;
};

void reg_reply_release(struct reg_reply *reply);

/* PUT .../register: authenticates, provisions, commits; 202 + operation. */
void registration_register(struct reg_ctx *ctx, const struct reg_request *req,
                           struct reg_reply *reply);
/* GET .../operations/{id}: authenticates, answers 200 (done) or 202 (in progress). */
void registration_poll(struct reg_ctx *ctx, const struct reg_request *req,
                       const char *operation_id, struct reg_reply *reply);
/* POST /{scope}/registrations/{id}: authenticates, returns the registration record. */
void registration_status(struct reg_ctx *ctx, const struct reg_request *req,
                         struct reg_reply *reply);

#endif
