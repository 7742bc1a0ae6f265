'use strict';
/*
 * Device API with TPM attestation, driven by the unmodified Azure IoT device
 * SDK (azure-iot-provisioning-device + -http + azure-iot-security-tpm, whose
 * tss.js talks to a real software TPM: swtpm behind lib/mssim_adapter.js).
 * Enrollments are created through the unmodified service SDK. Device-protocol
 * doc §4.4 and §5: a register PUT without Authorization gets 401 with an
 * activation blob for the EK; the TPM recovers the key K and signs the SAS;
 * the assigned result carries a second blob with the hub key K_hub, which
 * the TPM keeps at 0x81000100 and uses for the hub password
 * base64(HMAC-SHA256(K_hub, "provd-hub-password:" || deviceId)).
 * The linked hubs use the webhook connector (`--hub HOST=http://...`), played
 * by a small receiver in this process: provd POSTs each new identity with
 * authentication.password = hub_password_derive(K_hub, deviceId), so the
 * password the TPM computes must equal the one provd sent to the hub.
 * Three TPMs, each EK in at most one enrollment at a time: A is enrolled
 * under an explicit registration id, C with a deviceId, B is first unknown
 * and then enrolled under the SDK's default id (base32 of its EK).
 * Skips when swtpm is not installed.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const http = require('node:http');
const path = require('node:path');
const { Provd, Sdk, Swtpm, HUBS, ok, failsWith, randomKey, sleep } = require('../lib/provd.js');

const HUB_LABEL = 'provd-hub-password:';
const EK_ATTRS = 0x000300b2;  /* §5.1 EK template */
const SRK_ATTRS = 0x00030472; /* §5.1 SRK template */

const srv = new Provd({ ip: '127.0.0.61', name: 'device_tpm' });
const haveSwtpm = Swtpm.available();
let sdk;
let tpmA;
let tpmB;
let tpmC;
let keysA;
let keysB;
let keysC;

/*
 * The receiver of the webhook hub connector: records each POSTed JSON body
 * (hook.posts) and answers 200. Listens on ip with a kernel-chosen port.
 */
const hook = { posts: [], server: null, url: null };

function startHubWebhook(ip)
{
    hook.server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (d) => chunks.push(d));
        req.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body;
            try {
                body = JSON.parse(text);
            } catch (_) {
                body = { raw: text };
            }
            hook.posts.push({ method: req.method, path: req.url, body });
            res.writeHead(200, { 'Content-Type': 'application/json' });
            res.end('{"ok":true}');
        });
    });
    return new Promise((resolve, reject) => {
        hook.server.once('error', reject);
        hook.server.listen(0, ip, () => {
            hook.url = `http://${ip}:${hook.server.address().port}/hub`;
            resolve();
        });
    });
}

/* The identity creations provd sent to the hub for deviceId, oldest first. */
function hubCreates(deviceId)
{
    return hook.posts.filter((p) => p.body.operation === 'create' && p.body.deviceId === deviceId)
        .map((p) => p.body);
}

/*
 * The password provd gave the hub for the device in its latest creation,
 * after checking that creation's other fields.
 */
function hubPassword(deviceId, registrationId, assignedHub)
{
    const creates = hubCreates(deviceId);
    assert.ok(creates.length > 0, `provd sent no identity for ${deviceId} to the hub: ` +
        JSON.stringify(hook.posts));
    const c = creates[creates.length - 1];
    assert.strictEqual(c.hubHostName, assignedHub);
    assert.strictEqual(c.registrationId.toLowerCase(), registrationId.toLowerCase());
    assert.strictEqual(c.attestation, 'tpm');
    assert.strictEqual(c.authentication.type, 'sas', JSON.stringify(c));
    return c.authentication.password;
}

/* RFC 4648 base32, lower case, no padding (the SDK's default registration id). */
function base32(buf)
{
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    let bits = 0;
    let value = 0;
    let out = '';
    for (const byte of buf) {
        value = (value << 8) | byte;
        bits += 8;
        while (bits >= 5) {
            out += alphabet[(value >>> (bits - 5)) & 31];
            bits -= 5;
        }
        value &= (1 << bits) - 1;
    }
    if (bits > 0)
        out += alphabet[(value << (5 - bits)) & 31];
    return out;
}

/* {size, type, nameAlg, attrs} of a base64 TPM2B_PUBLIC. */
function publicHeader(b64)
{
    const b = Buffer.from(b64, 'base64');
    return { length: b.length, size: b.readUInt16BE(0), type: b.readUInt16BE(2),
        nameAlg: b.readUInt16BE(4), attrs: b.readUInt32BE(6) };
}

function tpmEnrollment(registrationId, keys, extra = {})
{
    const tpm = { endorsementKey: keys.endorsementKey };
    if (extra.withSrk)
        tpm.storageRootKey = keys.storageRootKey;
    const e = Object.assign({ registrationId, attestation: { type: 'tpm', tpm } }, extra);
    delete e.withSrk;
    return e;
}

async function createEnrollment(registrationId, keys, extra)
{
    const r = ok(await sdk.service('createOrUpdateIndividualEnrollment',
        [tpmEnrollment(registrationId, keys, extra)]), `create TPM enrollment ${registrationId}`);
    assert.strictEqual(r.registrationId.toLowerCase(), registrationId.toLowerCase());
    assert.strictEqual(r.attestation.type, 'tpm');
    return r;
}

/*
 * Checks the SDK's answer to a TPM registration (the whole operation result:
 * the TPM flow hands it back as is) and returns its registrationState.
 */
function assertAssigned(result, registrationId, deviceId)
{
    assert.ok(result && typeof result === 'object', 'no result: ' + JSON.stringify(result));
    assert.strictEqual(result.status, 'assigned', JSON.stringify(result));
    const state = result.registrationState;
    assert.ok(state && typeof state === 'object', 'no registrationState: ' + JSON.stringify(result));
    assert.strictEqual(state.status, 'assigned');
    assert.strictEqual(state.registrationId.toLowerCase(), registrationId.toLowerCase());
    assert.ok(HUBS.includes(state.assignedHub), `assignedHub ${state.assignedHub} is not a linked hub`);
    assert.strictEqual(state.deviceId, deviceId);
    assert.ok(state.tpm && typeof state.tpm.authenticationKey === 'string',
        'no tpm.authenticationKey in the assigned result');
    /* §5.2: six TPM2Bs; for RSA-2048 EK/SRK and a 32-byte key that is 798 bytes */
    const blob = Buffer.from(state.tpm.authenticationKey, 'base64');
    assert.ok(blob.length >= 700, `hub key blob of ${blob.length} bytes`);
    return state;
}

/*
 * What a TPM registration must show beyond the result: the TPM signed the
 * registration SAS once (sr = scope%2Fregistrations%2Fid, Node TPM style), and
 * afterwards holds another key (K_hub replaced K): the same data signed again
 * gives another MAC. signatures[0] is the hub password, signatures[1] that
 * re-signed SAS.
 */
function assertTpmKeys(r, registrationId)
{
    assert.strictEqual(r.sasSignatures.length, 1, JSON.stringify(r.sasSignatures));
    const sas = r.sasSignatures[0];
    const signed = Buffer.from(sas.data, 'base64').toString('utf8');
    const sr = encodeURIComponent(`${srv.scope}/registrations/${registrationId}`);
    assert.match(signed, new RegExp(`^${sr.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n\\d+$`));
    assert.strictEqual(r.signatures.length, 2);
    assert.notStrictEqual(r.signatures[1], sas.sig,
        'after the assignment the TPM still signs with the registration key K');
    const password = r.signatures[0];
    assert.match(password, /^[A-Za-z0-9+/]{43}=$/);
    return { password, sas };
}

/* The device must have no registration record (service view). */
async function assertNotRegistered(registrationId)
{
    failsWith(await sdk.service('getDeviceRegistrationState', [registrationId]), 404,
        `getDeviceRegistrationState(${registrationId})`);
}

/*
 * The first register PUT of a TPM device, sent by hand with the body the SDK
 * sends (§10.6). Resolves {status, json, text}.
 */
function rawChallenge(registrationId, keys, headers = {})
{
    return srv.request('PUT', `/${srv.scope}/registrations/${registrationId}/register?api-version=2019-03-31`,
        {
            body: { registrationId, tpm: { endorsementKey: keys.endorsementKey,
                storageRootKey: keys.storageRootKey } },
            headers,
        });
}

/* A refusal of the first PUT: 401, a DPS error body, and no activation blob. */
function assertRefusedChallenge(res, what)
{
    assert.strictEqual(res.status, 401, `${what}: ${res.status} ${res.text}`);
    assert.ok(res.json && typeof res.json === 'object', `${what}: body is not JSON: ${res.text}`);
    assert.strictEqual(res.json.authenticationKey, undefined, `${what}: got an activation blob`);
    assert.match(String(res.json.errorCode), /^401\d{3}$/, `${what}: ${res.text}`);
}

/* An SDK registration that the server refused before any activation blob. */
function assertSdkRefused(r, what)
{
    assert.ok(!r.ok, `${what}: the device was provisioned: ${JSON.stringify(r.result)}`);
    /*
     * azure-iot-provisioning-device-http turns a 401 without
     * authenticationKey into a FormatError (it expects the challenge there)
     */
    assert.strictEqual(r.error.name, 'FormatError', `${what}: ${JSON.stringify(r.error)}`);
    assert.strictEqual(r.sasSignatures.length, 0, `${what}: the TPM signed a SAS`);
}

const skip = haveSwtpm ? false : 'swtpm is not installed';

describe('device API: TPM with the Node SDK and swtpm over HTTPS', { skip }, () => {
    before(async () => {
        /* the receiver stays on the preferred address even if provd moves */
        await startHubWebhook(srv.ip);
        srv.hubs = HUBS.map((h) => `${h}=${hook.url}`);
        await srv.start();
        tpmA = await new Swtpm(srv.ip, path.join(srv.dir, 'tpm-a')).start();
        tpmB = await new Swtpm(srv.ip, path.join(srv.dir, 'tpm-b')).start();
        tpmC = await new Swtpm(srv.ip, path.join(srv.dir, 'tpm-c')).start();
        sdk = await new Sdk(srv).start();
    });

    after(async () => {
        if (sdk)
            sdk.close();
        for (const t of [tpmA, tpmB, tpmC]) {
            if (t)
                await t.stop();
        }
        srv.cleanup();
        if (hook.server) {
            if (typeof hook.server.closeAllConnections === 'function')
                hook.server.closeAllConnections();
            hook.server.close();
        }
    });

    it('the SDK reads EK and SRK (§5.1 templates) and derives the default registration id',
        srv.wrap(async () => {
            keysA = ok(await sdk.tpmKeys(tpmA), 'TPM A keys');
            keysB = ok(await sdk.tpmKeys(tpmB), 'TPM B keys');
            keysC = ok(await sdk.tpmKeys(tpmC), 'TPM C keys');
            for (const [name, k] of [['A', keysA], ['B', keysB], ['C', keysC]]) {
                const ek = publicHeader(k.endorsementKey);
                assert.deepStrictEqual(ek, { length: 316, size: 314, type: 0x0001, nameAlg: 0x000b,
                    attrs: EK_ATTRS }, `EK of TPM ${name}`);
                const srk = publicHeader(k.storageRootKey);
                assert.deepStrictEqual(srk, { length: 284, size: 282, type: 0x0001, nameAlg: 0x000b,
                    attrs: SRK_ATTRS }, `SRK of TPM ${name}`);
                const digest = crypto.createHash('sha256')
                    .update(Buffer.from(k.endorsementKey, 'base64')).digest();
                assert.strictEqual(k.registrationId, base32(digest), `default id of TPM ${name}`);
                assert.match(k.registrationId, /^[a-z2-7]{52}$/);
            }
            const eks = new Set([keysA, keysB, keysC].map((k) => k.endorsementKey));
            assert.strictEqual(eks.size, 3, 'three TPMs, fewer EKs');
            /* the keys are persistent: a second client reads the same ones */
            const again = ok(await sdk.tpmKeys(tpmA), 'TPM A keys again');
            assert.deepStrictEqual(again, keysA);
        }));

    it('individual enrollment, explicit id: assigned, and the TPM holds the hub key',
        srv.wrap(async () => {
            await createEnrollment('tpm-ind-1', keysA);
            const rid = 'tpm-ind-1';
            const r = await sdk.registerTpm(rid, tpmA, { sign: [HUB_LABEL + rid, null] });
            if (!r.ok)
                assert.fail(`register failed: ${JSON.stringify(r.error)}`);
            const state = assertAssigned(r.result, rid, rid);
            const { password } = assertTpmKeys(r, rid);
            assert.strictEqual(password, hubPassword(rid, rid, state.assignedHub),
                'the TPM\'s hub password is not the one provd gave the hub');
            /* the key is persistent at 0x81000100: a new client signs the same */
            const again = ok(await sdk.tpmSign(tpmA, [HUB_LABEL + rid]), 'sign with a new client');
            assert.deepStrictEqual(again, [password]);
            const rec = ok(await sdk.service('getDeviceRegistrationState', [rid]), 'record');
            assert.strictEqual(rec.status, 'assigned');
            assert.strictEqual(rec.assignedHub, state.assignedHub);
            assert.strictEqual(rec.deviceId, rid);
        }));

    it('enrollment with deviceId and the SRK: that deviceId, hub password over it', srv.wrap(async () => {
        await createEnrollment('tpm-ind-2', keysC, { deviceId: 'tpm-custom-device', withSrk: true });
        const r = await sdk.registerTpm('tpm-ind-2', tpmC,
            { sign: [HUB_LABEL + 'tpm-custom-device', null] });
        if (!r.ok)
            assert.fail(`register failed: ${JSON.stringify(r.error)}`);
        const state = assertAssigned(r.result, 'tpm-ind-2', 'tpm-custom-device');
        const { password } = assertTpmKeys(r, 'tpm-ind-2');
        assert.strictEqual(password, hubPassword('tpm-custom-device', 'tpm-ind-2', state.assignedHub));
        assert.strictEqual(hubCreates('tpm-ind-2').length, 0,
            'an identity named after the registration id');
    }));

    it('re-registration: same hub, and the same hub key (stable per EK)', srv.wrap(async () => {
        const rid = 'tpm-ind-1';
        const rec1 = ok(await sdk.service('getDeviceRegistrationState', [rid]), 'record 1');
        const first = hubPassword(rid, rid, rec1.assignedHub);
        await sleep(1100);
        const r = await sdk.registerTpm(rid, tpmA, { sign: [HUB_LABEL + rid, null] });
        if (!r.ok)
            assert.fail(`second register failed: ${JSON.stringify(r.error)}`);
        const state = assertAssigned(r.result, rid, rid);
        assert.strictEqual(state.assignedHub, rec1.assignedHub, 'hashed allocation moved the device');
        const { password } = assertTpmKeys(r, rid);
        assert.strictEqual(password, first, 'the hub key changed on re-registration');
        assert.strictEqual(hubPassword(rid, rid, state.assignedHub), password);
        const rec2 = ok(await sdk.service('getDeviceRegistrationState', [rid]), 'record 2');
        assert.strictEqual(rec2.createdDateTimeUtc, rec1.createdDateTimeUtc);
        assert.ok(Date.parse(rec2.lastUpdatedDateTimeUtc) > Date.parse(rec1.lastUpdatedDateTimeUtc));
    }));

    it('EK not enrolled: refused with 401 before any blob, nothing registered', srv.wrap(async () => {
        /* TPM B under its default id, which no enrollment has */
        const r = await sdk.registerTpm(null, tpmB);
        assertSdkRefused(r, 'unknown EK');
        assertRefusedChallenge(await rawChallenge(keysB.registrationId, keysB), 'unknown EK');
        await assertNotRegistered(keysB.registrationId);
        assert.strictEqual(hubCreates(keysB.registrationId).length, 0);
    }));

    it('another TPM under an enrolled id (EK mismatch): 401 before any blob', srv.wrap(async () => {
        const r = await sdk.registerTpm('tpm-ind-1', tpmB);
        assertSdkRefused(r, 'TPM B as tpm-ind-1');
        assertRefusedChallenge(await rawChallenge('tpm-ind-1', keysB), 'EK of TPM B for tpm-ind-1');
        /* tpm-ind-1 stays TPM A's */
        const rec = ok(await sdk.service('getDeviceRegistrationState', ['tpm-ind-1']), 'record');
        assert.strictEqual(rec.status, 'assigned');
    }));

    it('disabled enrollment: refused with 401, nothing registered', srv.wrap(async () => {
        await createEnrollment('tpm-disabled', keysB, { provisioningStatus: 'disabled' });
        const r = await sdk.registerTpm('tpm-disabled', tpmB);
        assert.ok(!r.ok, 'a disabled device was provisioned: ' + JSON.stringify(r.result));
        /*
         * refused on the first PUT (FormatError, no SAS signed) or, when the
         * server hands out the blob first, on the authenticated PUT with 401
         */
        if (r.error.name !== 'FormatError')
            failsWith(r, 401, 'register a disabled device');
        await assertNotRegistered('tpm-disabled');
        assert.strictEqual(hubCreates('tpm-disabled').length, 0);
        ok(await sdk.service('deleteIndividualEnrollment', ['tpm-disabled']), 'delete');
    }));

    it('a SAS not made with the blob key is refused (raw requests)', srv.wrap(async () => {
        const rid = 'tpm-ind-1';
        const res = await rawChallenge(rid, keysA);
        assert.strictEqual(res.status, 401, res.text);
        assert.strictEqual(typeof res.json.authenticationKey, 'string', res.text);
        assert.strictEqual(res.json.keyName, 'registration');
        assert.strictEqual(Buffer.from(res.json.authenticationKey, 'base64').length, 798);
        const se = Math.floor(Date.now() / 1000) + 3600;
        const sr = encodeURIComponent(`${srv.scope}/registrations/${rid}`);
        const sig = crypto.createHmac('sha256', Buffer.from(randomKey(32), 'base64'))
            .update(`${sr}\n${se}`).digest('base64');
        const auth = `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}` +
            '&skn=registration';
        const bad = await rawChallenge(rid, keysA, { Authorization: auth });
        assert.strictEqual(bad.status, 401, bad.text);
        assert.strictEqual(bad.json.authenticationKey, undefined, 'a bad SAS got a new blob');
        assert.match(String(bad.json.errorCode), /^401\d{3}$/, bad.text);
    }));

    it('default registration id: the SDK\'s base32 of the EK is the enrollment id', srv.wrap(async () => {
        const rid = keysB.registrationId;
        await createEnrollment(rid, keysB);
        const r = await sdk.registerTpm(null, tpmB, { sign: [HUB_LABEL + rid, null] });
        if (!r.ok)
            assert.fail(`register failed: ${JSON.stringify(r.error)}`);
        const state = assertAssigned(r.result, rid, rid);
        const { password } = assertTpmKeys(r, rid);
        assert.strictEqual(password, hubPassword(rid, rid, state.assignedHub));
        const again = ok(await sdk.tpmSign(tpmB, [HUB_LABEL + rid]), 'sign with a new client');
        assert.deepStrictEqual(again, [password]);
    }));

    it('provd exits 0 on SIGTERM', srv.wrap(async () => {
        sdk.close();
        await srv.stopAndCheck();
    }));
});
