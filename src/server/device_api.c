/*
 * The DPS device API over HTTPS (device-protocol doc §3):
 *   PUT  /{idScope}/registrations/{registrationId}/register
 *   GET  /{idScope}/registrations/{registrationId}/operations/{operationId}
 *   POST /{idScope}/registrations/{registrationId}          (status lookup)
 * Path segments are percent-decoded (the C SDK encodes them); any api-version
 * is accepted. The work is done by the transport-neutral pipeline in
 * registration.c; this file only decodes requests and encodes replies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/limits.h"
#include "../common/util.h"
#include "api.h"
#include "dps_wire.h"
#include "registration.h"

static void send_reply(struct http_response *resp, const struct http_request *req,
                       struct reg_reply *reply)
{
    if (reply->status >= 400 && reply->body != NULL) {
        /* a TPM challenge: 401 with {"authenticationKey","keyName"}, no error body (and no
           error code: the access log tells it from a refusal) */
        http_response_json(resp, reply->status, reply->body);
        resp->error_code = 0;
        snprintf(resp->log_note, sizeof(resp->log_note), "%s", reply->detail);
    } else if (reply->status >= 400) {
        http_response_error(resp, req, reply->error_code, "%s", reply->message);
        /* the log gets the precise reason, which the device may not */
        snprintf(resp->log_note, sizeof(resp->log_note), "%s", reply->detail);
    } else {
        http_response_json(resp, reply->status, reply->body);
    }
    if (reply->retry_after > 0) {
        char v[16];

        snprintf(v, sizeof(v), "%d", reply->retry_after);
        http_response_set_header(resp, "Retry-After", v);
    }
    reg_reply_release(reply);
}

static bool decode_segment(const char *raw, char *out, size_t outlen)
{
    size_t len = strlen(raw);

    return len < outlen && url_decode(raw, len, out, false) >= 0;
}

void device_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                       char **segs, int nsegs)
{
    char scope_in[PROV_MAX_SCOPE + 1], rid[PROV_MAX_REG_ID * 3 + 1], opid[128];
    const char *scope;
    struct reg_ctx ctx = {.cfg = w->cfg,
                          .store = w->store,
                          .assigner = w->srv->assigner,
                          .committer = w->srv->committer};
    struct reg_request rr = {0};
    struct reg_reply reply = {0};
    json_t *body = NULL;
    enum { REGISTER, POLL, STATUS } op;

    if (nsegs == 4 && strcmp(segs[3], "register") == 0) {
        op = REGISTER;
        if (req->method != HM_PUT)
            goto bad_method;
    } else if (nsegs == 5 && strcmp(segs[3], "operations") == 0) {
        op = POLL;
        if (req->method != HM_GET)
            goto bad_method;
    } else if (nsegs == 3) {
        op = STATUS;
        if (req->method != HM_POST)
            goto bad_method;
    } else {
        http_response_error(resp, req, 404001, "no such resource");
        return;
    }
    if (!decode_segment(segs[0], scope_in, sizeof(scope_in)) ||
        (scope = config_find_scope(w->cfg, scope_in)) == NULL) {
        http_response_error(resp, req, DPS_UNKNOWN_SCOPE, "unknown ID scope");
        return;
    }
    if (!decode_segment(segs[2], rid, sizeof(rid)) || !id_is_valid(rid)) {
        http_response_error(resp, req, DPS_INVALID_REGISTRATION_ID,
                            "invalid registration id: 1 to 128 characters of letters, digits "
                            "and - . _ : ending in a letter, digit or -");
        return;
    }
    if (op == POLL && !decode_segment(segs[4], opid, sizeof(opid))) {
        http_response_error(resp, req, DPS_OPERATION_NOT_FOUND, "operation not found");
        return;
    }
    /* a body, when there is one, is a DeviceRegistration object (GET bodies are ignored) */
    if (op != POLL && dps_parse_registration(req->body, req->body_len, rid, DPS_TRANSPORT_HTTPS,
                                             &body, &reply) != 0) {
        send_reply(resp, req, &reply);
        return;
    }
    rr.scope = scope;
    rr.registration_id = rid;
    rr.authorization = http_request_header(req, "Authorization");
    rr.body = body;
    if (req->conn != NULL && req->conn->ssl != NULL) {
        /* the TLS client certificate, for X.509 attestation (verified there, not by TLS) */
        rr.peer_leaf = SSL_get0_peer_certificate(req->conn->ssl);
        rr.peer_chain = SSL_get_peer_cert_chain(req->conn->ssl);
    }
    rr.may_hold = !req->final_try;
    switch (op) {
    case REGISTER: registration_register(&ctx, &rr, &reply); break;
    case POLL: registration_poll(&ctx, &rr, opid, &reply); break;
    case STATUS: registration_status(&ctx, &rr, &reply); break;
    }
    if (reply.hold_ticket != 0) {
        resp->hold_ticket = reply.hold_ticket; /* server.c asks again once it is written */
        json_decref(body);
        return;
    }
    send_reply(resp, req, &reply);
    json_decref(body);
    return;
bad_method:
    http_response_error(resp, req, DPS_METHOD_NOT_ALLOWED, "method %s not allowed here",
                        req->method_name);
    http_response_set_header(resp, "Allow", op == REGISTER ? "PUT" : op == POLL ? "GET" : "POST");
}
