'use strict';
/*
 * Device API with X.509 attestation, driven by the unmodified Azure IoT device
 * SDK (azure-iot-provisioning-device + -http + azure-iot-security-x509) and by
 * prov-device --cert/--key. Enrollments are created through the unmodified
 * service SDK; CA certificates through provd's admin API (/certificates, with
 * proof of possession). The test PKI is made at start-up by lib/pki.sh.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert');
const { execFile } = require('node:child_process');
const path = require('node:path');
const { Provd, Sdk, Pki, BIN, HUBS, ok, failsWith } = require('../lib/provd.js');

const srv = new Provd({ ip: '127.0.0.41', name: 'device_x509' });
let sdk;
let pki;

function x509Individual(registrationId, certPem, extra = {})
{
    return Object.assign({
        registrationId,
        attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: certPem } } } },
    }, extra);
}

function x509Group(enrollmentGroupId, x509, extra = {})
{
    return Object.assign({ enrollmentGroupId, attestation: { type: 'x509', x509 } }, extra);
}

async function createIndividual(registrationId, certName, extra)
{
    const r = ok(await sdk.service('createOrUpdateIndividualEnrollment',
        [x509Individual(registrationId, pki.pem(certName), extra)]), `create enrollment ${registrationId}`);
    assert.strictEqual(r.registrationId.toLowerCase(), registrationId.toLowerCase());
    return r;
}

async function createSigningGroup(groupId, caName, extra)
{
    const r = ok(await sdk.service('createOrUpdateEnrollmentGroup', [x509Group(groupId,
        { signingCertificates: { primary: { certificate: pki.pem(caName) } } }, extra)]),
    `create group ${groupId}`);
    assert.strictEqual(r.enrollmentGroupId, groupId);
    return r;
}

/* Registers certificate NAME (CN = registration id) with the SDK; chain: send the intermediates too. */
function register(name, registrationId, opts = {})
{
    const cert = opts.chain === false ? pki.pem(name) : pki.chain(name);
    return sdk.registerX509(registrationId, cert, pki.key(name), { newConnections: opts.newConnections });
}

/* Checks an assigned registrationState and its x509 member; returns the state. */
function assertAssigned(state, registrationId, certName, group)
{
    assert.ok(state && typeof state === 'object', 'no registration state: ' + JSON.stringify(state));
    assert.strictEqual(state.status, 'assigned', JSON.stringify(state));
    assert.strictEqual(state.registrationId.toLowerCase(), registrationId.toLowerCase());
    assert.ok(HUBS.includes(state.assignedHub), `assignedHub ${state.assignedHub} is not a linked hub`);
    assert.strictEqual(state.deviceId, registrationId);
    for (const f of ['createdDateTimeUtc', 'lastUpdatedDateTimeUtc']) {
        assert.strictEqual(typeof state[f], 'string', `${f} missing: ${JSON.stringify(state)}`);
        assert.ok(!Number.isNaN(Date.parse(state[f])), `${f} unparsable: ${state[f]}`);
    }
    const x = state.x509;
    assert.ok(x && typeof x === 'object', 'no registrationState.x509: ' + JSON.stringify(state));
    const info = x.certificateInfo;
    assert.ok(info && typeof info === 'object', 'no x509.certificateInfo: ' + JSON.stringify(x));
    assert.match(String(info.subjectName), new RegExp(`CN=${registrationId}(,|$)`),
        `subjectName ${info.subjectName}`);
    const tp = pki.thumbprints(certName);
    assert.strictEqual(String(info.sha256Thumbprint).toUpperCase(), tp.sha256, 'leaf sha256Thumbprint');
    assert.strictEqual(String(info.sha1Thumbprint).toUpperCase(), tp.sha1, 'leaf sha1Thumbprint');
    if (group === undefined) {
        assert.strictEqual(x.enrollmentGroupId, undefined,
            'an individual enrollment result names a group: ' + JSON.stringify(x));
    } else {
        assert.strictEqual(x.enrollmentGroupId, group.id, JSON.stringify(x));
        const si = x.signingCertificateInfo;
        assert.ok(si && typeof si === 'object', 'no signingCertificateInfo: ' + JSON.stringify(x));
        assert.strictEqual(String(si.sha256Thumbprint).toUpperCase(), pki.thumbprints(group.anchor).sha256,
            `signingCertificateInfo is not ${group.anchor}: ${JSON.stringify(si)}`);
    }
    return state;
}

/* A refusal as the SDK reports it: 401 and a DPS error body whose message has every part. */
function assertRefused(r, what, ...parts)
{
    const e = failsWith(r, 401, what);
    const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
    assert.ok(body && typeof body.message === 'string', `${what}: no DPS error body: ${JSON.stringify(e)}`);
    assert.ok(Number.isInteger(body.errorCode) && Math.floor(body.errorCode / 1000) === 401,
        `${what}: errorCode ${body.errorCode}`);
    for (const p of parts)
        assert.ok(body.message.includes(p), `${what}: message '${body.message}' lacks '${p}'`);
    return body;
}

async function assertNotRegistered(registrationId)
{
    failsWith(await sdk.service('getDeviceRegistrationState', [registrationId]), 404,
        `getDeviceRegistrationState(${registrationId})`);
}

/* PUT /certificates/{name} through the admin API; resolves the response. */
async function uploadCa(name, certName, verified)
{
    const body = { certificate: pki.pem(certName) };
    if (verified)
        body.isVerified = true;
    const r = await srv.request('PUT', `/certificates/${name}?api-version=2021-10-01`, { body, auth: true });
    assert.ok([200, 201].includes(r.status), `PUT /certificates/${name}: ${r.status} ${r.text}`);
    assert.ok(r.headers.etag, 'no ETag on the upload');
    return r;
}

/* Proof of possession for an uploaded CA: code, then a certificate with CN = code signed by the CA key. */
async function proveCa(name, certName, etag)
{
    const code = await srv.request('POST',
        `/certificates/${name}/generateVerificationCode?api-version=2021-10-01`,
        { auth: true, headers: { 'If-Match': etag } });
    assert.strictEqual(code.status, 200, `generateVerificationCode: ${code.text}`);
    const vc = code.json && code.json.properties && code.json.properties.verificationCode;
    assert.ok(typeof vc === 'string' && vc.length > 0, `no verificationCode: ${code.text}`);
    pki.leaf(`pop-${name}`, certName, vc);
    const v = await srv.request('POST', `/certificates/${name}/verify?api-version=2021-10-01`,
        { auth: true, headers: { 'If-Match': code.headers.etag }, body: { certificate: pki.pem(`pop-${name}`) } });
    assert.strictEqual(v.status, 200, `verify: ${v.text}`);
    assert.strictEqual(v.json.properties.isVerified, true, `not verified: ${v.text}`);
}

/* Runs prov-device; resolves {code, stdout, stderr}. */
function provDevice(args)
{
    return new Promise((resolve) => {
        execFile(BIN.provDevice, args, { timeout: 60000 }, (err, stdout, stderr) => {
            resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
        });
    });
}

describe('device API: X.509 with the Node SDK over HTTPS', () => {
    const grpRoot = { id: 'x509-grp-root', anchor: 'rootA' };
    const grpInt = { id: 'x509-grp-int', anchor: 'intB' };
    const grpRef = { id: 'x509-grp-ref', anchor: 'rootC' };

    before(async () => {
        await srv.start();
        sdk = await new Sdk(srv).start();
        pki = new Pki(path.join(srv.dir, 'pki'));
        /* A: group on the root; devices send leaf + intermediate */
        pki.root('rootA', 'x509 Root A').ca('intA', 'rootA', 'x509 Intermediate A');
        for (const id of ['x509-ga-1', 'x509-ga-2', 'x509-blocked', 'x509-fresh', 'x509-cli', 'x509-resume'])
            pki.leaf(id, 'intA', id);
        /* B: group on the intermediate */
        pki.root('rootB', 'x509 Root B').ca('intB', 'rootB', 'x509 Intermediate B');
        for (const id of ['x509-gb-chain', 'x509-gb-leaf'])
            pki.leaf(id, 'intB', id);
        /* C: an RSA root referenced by a group through an uploaded, verified CA */
        pki.root('rootC', 'x509 Root C', { keyType: 'rsa' }).ca('intC', 'rootC', 'x509 Intermediate C');
        pki.leaf('x509-gc-1', 'intC', 'x509-gc-1');
        /* D: a group that is disabled and enabled again */
        pki.root('rootD', 'x509 Root D');
        for (const id of ['x509-gd-1', 'x509-gd-2'])
            pki.leaf(id, 'rootD', id);
        /* individual enrollments: leaves of a root no group trusts */
        pki.root('rootI', 'x509 Root for individual devices');
        for (const id of ['x509-ind-1', 'x509-ind-2'])
            pki.leaf(id, 'rootI', id);
        pki.root('rootX', 'x509 Unrelated Root').leaf('x509-unknown', 'rootX', 'x509-unknown');

        await createSigningGroup(grpRoot.id, 'rootA');
        await createSigningGroup(grpInt.id, 'intB');
    });

    after(() => {
        if (sdk)
            sdk.close();
        srv.cleanup();
    });

    it('individual enrollment pinning the leaf: assigned, x509.certificateInfo is the leaf',
        srv.wrap(async () => {
            const enr = await createIndividual('x509-ind-1', 'x509-ind-1');
            const info = enr.attestation.x509.clientCertificates.primary.info;
            assert.strictEqual(String(info.sha256Thumbprint).toUpperCase(),
                pki.thumbprints('x509-ind-1').sha256, 'enrollment info thumbprint');
            assert.strictEqual(enr.attestation.x509.clientCertificates.primary.certificate, undefined,
                'the service echoes the certificate body');
            const state = ok(await register('x509-ind-1', 'x509-ind-1'), 'register');
            assertAssigned(state, 'x509-ind-1', 'x509-ind-1');
            assert.strictEqual(state.substatus, 'initialAssignment');
            const rec = ok(await sdk.service('getDeviceRegistrationState', ['x509-ind-1']), 'record');
            assert.strictEqual(rec.status, 'assigned');
            assert.strictEqual(rec.assignedHub, state.assignedHub);
        }));

    it('individual enrollment: another device\'s certificate for that registration id is refused',
        srv.wrap(async () => {
            await createIndividual('x509-ind-2', 'x509-ind-2');
            /* x509-ind-1's key and certificate, asking to be x509-ind-2: CN mismatch */
            assertRefused(await sdk.registerX509('x509-ind-2', pki.chain('x509-ind-1'),
                pki.key('x509-ind-1')), 'register x509-ind-2 with x509-ind-1\'s certificate',
            'CN=x509-ind-1', 'subject CN does not match registration id');
            await assertNotRegistered('x509-ind-2');
        }));

    it('group on a root, device sends leaf + intermediate: assigned to that group', srv.wrap(async () => {
        const state = ok(await register('x509-ga-1', 'x509-ga-1'), 'register');
        assertAssigned(state, 'x509-ga-1', 'x509-ga-1', grpRoot);
        const { items } = await sdk.queryAll('registrations', { groupId: grpRoot.id });
        assert.deepStrictEqual(items.map((x) => x.registrationId), ['x509-ga-1'],
            'registration records of the group');
    }));

    it('group on a root, device sends only its leaf: 401 (nothing links it to the root)',
        srv.wrap(async () => {
            assertRefused(await register('x509-ga-2', 'x509-ga-2', { chain: false }), 'leaf only',
                'CN=x509-ga-2');
            await assertNotRegistered('x509-ga-2');
            assertAssigned(ok(await register('x509-ga-2', 'x509-ga-2'), 'with its intermediate'),
                'x509-ga-2', 'x509-ga-2', grpRoot);
        }));

    it('group on an intermediate, device sends leaf + intermediate: assigned', srv.wrap(async () => {
        const state = ok(await register('x509-gb-chain', 'x509-gb-chain'), 'register');
        assertAssigned(state, 'x509-gb-chain', 'x509-gb-chain', grpInt);
    }));

    it('group on an intermediate, device sends only its leaf: assigned', srv.wrap(async () => {
        const state = ok(await register('x509-gb-leaf', 'x509-gb-leaf', { chain: false }), 'register');
        assertAssigned(state, 'x509-gb-leaf', 'x509-gb-leaf', grpInt);
    }));

    it('group on a CA reference: refused until proof of possession, then assigned',
        srv.wrap(async () => {
            const up = await uploadCa('x509-ca-c', 'rootC', false);
            assert.strictEqual(up.json.properties.isVerified, false, 'uploaded as verified');
            ok(await sdk.service('createOrUpdateEnrollmentGroup', [x509Group(grpRef.id,
                { caReferences: { primary: 'x509-ca-c' } })]), 'create group');
            assertRefused(await register('x509-gc-1', 'x509-gc-1'), 'before proof of possession',
                'x509-ca-c', 'unverified CA');
            await assertNotRegistered('x509-gc-1');
            await proveCa('x509-ca-c', 'rootC', up.headers.etag);
            const state = ok(await register('x509-gc-1', 'x509-gc-1'), 'register after verification');
            assertAssigned(state, 'x509-gc-1', 'x509-gc-1', grpRef);
        }));

    it('unknown CA: 401 from the SDK, message names the leaf', srv.wrap(async () => {
        assertRefused(await register('x509-unknown', 'x509-unknown'), 'unknown CA',
            'certificate 0 (CN=x509-unknown)', 'unknown CA');
        await assertNotRegistered('x509-unknown');
    }));

    it('a disabled individual enrollment blocks a device of an enabled group', srv.wrap(async () => {
        await createIndividual('x509-blocked', 'x509-blocked', { provisioningStatus: 'disabled' });
        assertRefused(await register('x509-blocked', 'x509-blocked'), 'blocked device',
            'enrollment is disabled');
        await assertNotRegistered('x509-blocked');
        /* once the blocking entry is gone, the group takes the device */
        ok(await sdk.service('deleteIndividualEnrollment', ['x509-blocked']), 'delete the blocker');
        assertAssigned(ok(await register('x509-blocked', 'x509-blocked'), 'register after delete'),
            'x509-blocked', 'x509-blocked', grpRoot);
    }));

    it('disabling a group blocks all its devices; enabling it lets them back', srv.wrap(async () => {
        const grpD = { id: 'x509-grp-toggle', anchor: 'rootD' };
        await createSigningGroup(grpD.id, 'rootD');
        const ids = ['x509-gd-1', 'x509-gd-2'];
        const first = {};
        const regs = await Promise.all(ids.map((id) => register(id, id)));
        ids.forEach((id, i) => {
            first[id] = assertAssigned(ok(regs[i], `register ${id}`), id, id, grpD);
        });
        /* disable it as the Azure CLI would: the stored group back with certificate info only */
        const g = ok(await sdk.service('getEnrollmentGroup', [grpD.id]), 'get group');
        assert.strictEqual(g.attestation.x509.signingCertificates.primary.certificate, undefined);
        g.provisioningStatus = 'disabled';
        const off = ok(await sdk.service('createOrUpdateEnrollmentGroup', [g]), 'disable group');
        assert.strictEqual(off.provisioningStatus, 'disabled');
        const refused = await Promise.all(ids.map((id) => register(id, id)));
        for (const [i, id] of ids.entries()) {
            assertRefused(refused[i], `${id} in a disabled group`, 'enrollment group is disabled');
            /* the earlier record stays as it was */
            const rec = ok(await sdk.service('getDeviceRegistrationState', [id]), `record ${id}`);
            assert.strictEqual(rec.lastUpdatedDateTimeUtc, first[id].lastUpdatedDateTimeUtc,
                `a refused registration touched the record of ${id}`);
        }
        off.provisioningStatus = 'enabled';
        ok(await sdk.service('createOrUpdateEnrollmentGroup', [off]), 'enable group');
        const back = await Promise.all(ids.map((id) => register(id, id)));
        ids.forEach((id, i) => assertAssigned(ok(back[i], `register ${id} again`), id, id, grpD));
    }));

    it('deleting the registration record forces a fresh registration', srv.wrap(async () => {
        const id = 'x509-fresh';
        /* each registration takes at least one poll (Retry-After: 1), so times differ */
        const first = assertAssigned(ok(await register(id, id), 'first'), id, id, grpRoot);
        /* control: re-registration keeps the record */
        const again = assertAssigned(ok(await register(id, id), 'again'), id, id, grpRoot);
        assert.strictEqual(again.createdDateTimeUtc, first.createdDateTimeUtc,
            're-registration made a new record');
        const rec1 = ok(await sdk.service('getDeviceRegistrationState', [id]), 'record');
        ok(await sdk.service('deleteDeviceRegistrationState', [id]), 'delete the record');
        await assertNotRegistered(id);
        const fresh = assertAssigned(ok(await register(id, id), 'after delete'), id, id, grpRoot);
        assert.ok(Date.parse(fresh.createdDateTimeUtc) > Date.parse(first.createdDateTimeUtc),
            `createdDateTimeUtc not new: ${first.createdDateTimeUtc} -> ${fresh.createdDateTimeUtc}`);
        assert.strictEqual(fresh.substatus, 'initialAssignment');
        const rec2 = ok(await sdk.service('getDeviceRegistrationState', [id]), 'new record');
        assert.strictEqual(rec2.createdDateTimeUtc, fresh.createdDateTimeUtc);
        assert.notStrictEqual(rec2.createdDateTimeUtc, rec1.createdDateTimeUtc);
        assert.notStrictEqual(rec2.etag, rec1.etag);
    }));

    it('a connection per request with TLS sessions resumed (Node 18 agent): still assigned',
        srv.wrap(async () => {
            /*
             * A resumed handshake carries no certificates: the server must
             * either not offer resumption or still know the device's chain
             * (this device relies on its intermediate).
             */
            const id = 'x509-resume';
            const tls = { handshakes: 0, resumed: 0 };
            for (let i = 0; i < 2; i++) {
                const r = await register(id, id, { newConnections: true });
                tls.handshakes += r.tls.handshakes;
                tls.resumed += r.tls.resumed;
                assert.ok(r.ok, `registration ${i + 1} (TLS so far ${JSON.stringify(tls)}) failed: ` +
                    JSON.stringify(r.error));
                assertAssigned(r.result, id, id, grpRoot);
            }
            assert.ok(tls.handshakes >= 4, `a connection per request: ${JSON.stringify(tls)}`);
        }));

    it('prov-device --cert --key provisions a group device', srv.wrap(async () => {
        const id = 'x509-cli';
        const r = await provDevice(['--scope', srv.scope, '--host', `${srv.ip}:443`,
            '--cacert', srv.certs.ca, '--cert', pki.file(id, 'chain.pem'), '--key', pki.file(id, 'key'),
            '--json']);
        assert.strictEqual(r.code, 0, `prov-device exited ${r.code}: ${r.stderr}${r.stdout}`);
        /* --json: {status, assignedHub, deviceId, ..., enrollmentGroupId, x509} */
        const out = JSON.parse(r.stdout);
        assert.strictEqual(out.status, 'assigned', r.stdout);
        assert.ok(HUBS.includes(out.assignedHub), `assignedHub: ${r.stdout}`);
        assert.strictEqual(out.deviceId, id, r.stdout);
        assert.strictEqual(out.enrollmentGroupId, grpRoot.id, r.stdout);
        assert.strictEqual(String(out.x509.certificateInfo.sha256Thumbprint).toUpperCase(),
            pki.thumbprints(id).sha256, r.stdout);
        const rec = ok(await sdk.service('getDeviceRegistrationState', [id]), 'record');
        assert.strictEqual(rec.status, 'assigned');
        assert.strictEqual(rec.assignedHub, out.assignedHub);
    }));

    it('provd exits 0 on SIGTERM', srv.wrap(async () => {
        sdk.close();
        await srv.stopAndCheck();
    }));
});
