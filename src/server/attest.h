/*
 * Attestation mechanisms behind the registration pipeline (internal to
 * src/server). Each one either fills a struct attest_match (the enrollment the
 * device proved it belongs to) or fills the reply with the refusal.
 */
#ifndef PROV_SERVER_ATTEST_H
#define PROV_SERVER_ATTEST_H

#include <stdbool.h>

#include <jansson.h>

#include "../common/limits.h"
#include "registration.h"

struct attest_match {
    json_t *enrollment;   /* owned: the individual enrollment or the group */
    bool is_group;
    char group_id[PROV_MAX_REG_ID + 1]; /* as stored */
    json_t *x509;         /* owned, X.509 only: registrationState.x509 */
};

void attest_match_release(struct attest_match *m);

/* Fills reply as a refusal: status = code / 1000. */
void attest_fail(struct reg_reply *reply, int code, const char *message, const char *detail_fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* Parses a stored document; NULL (logged) when it is not a JSON object. */
json_t *attest_load_doc(const struct store_doc *doc);

/*
 * X.509: the TLS client certificate (req->peer_leaf, with req->peer_chain)
 * against an individual enrollment's pinned certificate or the enrollment
 * groups' signing certificates / verified CA references. 0 or -1 (reply filled).
 */
int attest_x509(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                struct reg_reply *reply);

#endif
