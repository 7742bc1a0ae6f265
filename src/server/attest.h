/*
 * Attestation mechanisms behind the registration pipeline (internal to
 * src/server). Each one either fills a struct attest_match (the enrollment the
 * device proved it belongs to) or fills the reply with the refusal.
 */
#ifndef PROV_SERVER_ATTEST_H
#define PROV_SERVER_ATTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/limits.h"
#include "registration.h"

struct attest_match {
    json_t *enrollment;   /* owned: the individual enrollment or the group */
    bool is_group;
    char group_id[PROV_MAX_REG_ID + 1]; /* as stored */
    json_t *x509;         /* owned, X.509 only: registrationState.x509 */
    json_t *tpm;          /* owned, TPM only: registrationState.tpm ({"authenticationKey"}) */
    /*
     * The device's key for its hub (symmetric key: the key its token verified
     * with, derived for groups; TPM: the hub key of the assigned result);
     * empty for X.509. Wiped by attest_match_release.
     */
    uint8_t hub_key[64];
    size_t hub_key_len;
};

void attest_match_release(struct attest_match *m);

/* Fills reply as a refusal: status = code / 1000. */
void attest_fail(struct reg_reply *reply, int code, const char *message, const char *detail_fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/*
 * Parses a stored enrollment, group or CA document (through this thread's
 * doc_cache: the caller owns the result); NULL (logged) when it is not a JSON
 * object.
 */
json_t *attest_load_doc(const struct store_doc *doc);

/*
 * X.509: the TLS client certificate (req->peer_leaf, with req->peer_chain)
 * against an individual enrollment's pinned certificate or the enrollment
 * groups' signing certificates / verified CA references. 0 or -1 (reply filled).
 */
int attest_x509(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
                struct reg_reply *reply);

/*
 * TPM (attest_tpm.c; docs/protocol-decisions.md "TPM attestation").
 * With a "tpm" member in req->body (register PUTs):
 *   - no Authorization: the challenge. Returns -1 with reply = 401 and
 *     reply->body = {"authenticationKey": blob, "keyName": "registration"}
 *     (device_api.c sends that body, not an error body) when the EK belongs
 *     to an enrollment; otherwise a refusal (401002, 400004).
 *   - a SAS signed with the challenge key: 0 with m->enrollment (group:
 *     is_group, group_id), m->tpm = {"authenticationKey": blob of the hub key}
 *     and m->hub_key; or -1 with reply filled (401002, 401003, 500001).
 * Without a "tpm" member (polls, status lookups: the device signs with the
 * challenge key and sends no EK): 0 with m->enrollment (and is_group,
 * group_id) and m->hub_key filled but m->tpm NULL, when the registration id
 * is a TPM device's and the token verifies; -1 with reply filled when it is a
 * TPM device's and the token does not; 1 (reply untouched) when the
 * registration id is not a TPM device's at all, so the caller keeps its own
 * answer. A register that matched this way (TPM enrollment, m->tpm NULL: a
 * PUT without the tpm member) must not be assigned: the device would never
 * get registrationState.tpm.
 */
int attest_tpm(struct reg_ctx *ctx, const struct reg_request *req, struct attest_match *m,
               struct reg_reply *reply);

/*
 * The checks every SAS-authenticated device request shares: an Authorization
 * header that parses, sr = {scope}/registrations/{id} (case-insensitive), not
 * expired (PROV_SAS_SKEW_SECONDS of skew) and skn, when present,
 * "registration". 0 with *tok filled (the caller wipes it), or -1 with reply
 * filled (401002) and *tok wiped.
 */
struct sas_token;
int attest_sas_precheck(const struct reg_request *req, struct sas_token *tok,
                        struct reg_reply *reply);

#endif
