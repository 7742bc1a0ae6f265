'use strict';
/*
 * Device API over MQTT (provd --mqtt-listen), driven by the unmodified Azure
 * IoT device SDK: azure-iot-provisioning-device + -mqtt, with
 * azure-iot-security-symmetric-key and azure-iot-security-x509. Enrollments
 * are created through the unmodified service SDK; the X.509 test PKI comes
 * from lib/pki.sh. The same devices also register over HTTPS, to show that
 * both transports go through the same pipeline.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const tls = require('node:tls');
const { Provd, Sdk, Pki, HUBS, randomKey, deriveKey, ok, failsWith } = require('../lib/provd.js');

const srv = new Provd({ ip: '127.0.0.51', name: 'device_mqtt', mqtt: true });
const MQTT = { transport: 'mqtt' };
let sdk;
let pki;

function symkey(primaryKey, secondaryKey)
{
    return { type: 'symmetricKey', symmetricKey: { primaryKey, secondaryKey } };
}

async function createEnrollment(registrationId, extra = {})
{
    const primaryKey = randomKey(32);
    const e = Object.assign({ registrationId, attestation: symkey(primaryKey, randomKey(32)) }, extra);
    ok(await sdk.service('createOrUpdateIndividualEnrollment', [e]), `create enrollment ${registrationId}`);
    return primaryKey;
}

async function createGroup(enrollmentGroupId, attestation, extra = {})
{
    const g = Object.assign({ enrollmentGroupId, attestation }, extra);
    ok(await sdk.service('createOrUpdateEnrollmentGroup', [g]), `create group ${enrollmentGroupId}`);
}

function assertAssigned(state, registrationId)
{
    assert.ok(state && typeof state === 'object', 'no registration state: ' + JSON.stringify(state));
    assert.strictEqual(state.status, 'assigned', JSON.stringify(state));
    assert.strictEqual(state.registrationId.toLowerCase(), registrationId.toLowerCase());
    assert.ok(HUBS.includes(state.assignedHub), `assignedHub ${state.assignedHub} is not a linked hub`);
    assert.strictEqual(state.deviceId, registrationId);
    assert.ok(!Number.isNaN(Date.parse(state.createdDateTimeUtc)), JSON.stringify(state));
    assert.ok(typeof state.etag === 'string' && state.etag.length > 0, 'no etag');
    return state;
}

/* A refusal as the MQTT transport reports it: the status and a DPS error body. */
function assertRefused(r, status, code, what)
{
    const e = failsWith(r, status, what);
    const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
    assert.ok(body && typeof body === 'object', `${what}: no error body: ${JSON.stringify(e)}`);
    assert.strictEqual(body.errorCode, code, `${what}: ${JSON.stringify(body)}`);
    for (const f of ['trackingId', 'message', 'timestampUtc'])
        assert.ok(typeof body[f] === 'string' && body[f].length > 0, `${what}: no ${f}`);
    return e;
}

async function assertNotRegistered(registrationId)
{
    failsWith(await sdk.service('getDeviceRegistrationState', [registrationId]), 404,
        `getDeviceRegistrationState(${registrationId})`);
}

/* An MQTT connection left open (CONNECT accepted), for the shutdown test. */
function openMqttConnection(registrationId)
{
    const str = (s) => {
        const b = Buffer.from(s, 'utf8');
        const n = Buffer.alloc(2);
        n.writeUInt16BE(b.length);
        return Buffer.concat([n, b]);
    };
    const body = Buffer.concat([str('MQTT'), Buffer.from([4, 0x82, 0, 60]), str(registrationId),
        str(`${srv.scope}/registrations/${registrationId}/api-version=2019-03-31`)]);
    const packet = Buffer.concat([Buffer.from([0x10, body.length]), body]);
    return new Promise((resolve, reject) => {
        const s = tls.connect({ host: srv.ip, port: 8883, ca: srv.caPem }, () => s.write(packet));
        const timer = setTimeout(() => reject(new Error('no CONNACK within 5 s')), 5000);
        s.once('data', (d) => {
            clearTimeout(timer);
            if (d.length >= 4 && d[0] === 0x20 && d[3] === 0)
                resolve(s);
            else
                reject(new Error(`unexpected answer to CONNECT: ${d.toString('hex')}`));
        });
        s.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
    });
}

describe('device API: the Node SDK over MQTT', () => {
    before(async () => {
        await srv.start();
        sdk = await new Sdk(srv).start();
        pki = new Pki(path.join(srv.dir, 'pki'));
        pki.root('rootI', 'mqtt Root for individual devices').leaf('mq-x509-ind', 'rootI', 'mq-x509-ind');
        pki.root('rootG', 'mqtt Group Root').ca('intG', 'rootG', 'mqtt Group Intermediate');
        pki.leaf('mq-x509-grp', 'intG', 'mq-x509-grp');
        pki.root('rootX', 'mqtt Unrelated Root').leaf('mq-x509-unknown', 'rootX', 'mq-x509-unknown');
    });

    after(() => {
        if (sdk)
            sdk.close();
        srv.cleanup();
    });

    it('symmetric key, individual enrollment: assigned, payload echoed', srv.wrap(async () => {
        const key = await createEnrollment('mq-sym-1');
        const payload = { modelId: 'dtmi:x;1', nested: { a: [1, 2] } };
        const state = assertAssigned(ok(await sdk.register('mq-sym-1', key,
            Object.assign({ payload }, MQTT)), 'register over MQTT'), 'mq-sym-1');
        assert.strictEqual(state.substatus, 'initialAssignment');
        assert.deepStrictEqual(state.payload, payload);
        const rec = ok(await sdk.service('getDeviceRegistrationState', ['mq-sym-1']), 'record');
        assert.strictEqual(rec.status, 'assigned');
        assert.strictEqual(rec.assignedHub, state.assignedHub);
    }));

    it('symmetric key, group enrollment: a derived key is assigned and listed under the group',
        srv.wrap(async () => {
            const groupKey = randomKey(32);
            await createGroup('mq-sym-group', symkey(groupKey, randomKey(32)));
            for (const id of ['mq-grp-a', 'mq-grp-b'])
                assertAssigned(ok(await sdk.register(id, deriveKey(groupKey, id), MQTT), `register ${id}`), id);
            const { items } = await sdk.queryAll('registrations', { groupId: 'mq-sym-group' });
            assert.deepStrictEqual(items.map((x) => x.registrationId.toLowerCase()).sort(),
                ['mq-grp-a', 'mq-grp-b']);
        }));

    it('HTTPS then MQTT for the same device: same hub, createdDateTimeUtc kept', srv.wrap(async () => {
        const key = await createEnrollment('mq-both');
        const first = assertAssigned(ok(await sdk.register('mq-both', key), 'register over HTTPS'),
            'mq-both');
        const second = assertAssigned(ok(await sdk.register('mq-both', key, MQTT), 'register over MQTT'),
            'mq-both');
        assert.strictEqual(second.assignedHub, first.assignedHub);
        assert.strictEqual(second.createdDateTimeUtc, first.createdDateTimeUtc);
        assert.notStrictEqual(second.etag, first.etag);
    }));

    it('wrong key: 401 (401002) and nothing assigned', srv.wrap(async () => {
        await createEnrollment('mq-wrongkey');
        const r = await sdk.register('mq-wrongkey', randomKey(32), MQTT);
        assertRefused(r, 401, 401002, 'register with a wrong key');
        assert.strictEqual(r.error.type, 'UnauthorizedError');
        await assertNotRegistered('mq-wrongkey');
    }));

    it('unknown registration id and disabled enrollment: 401', srv.wrap(async () => {
        assertRefused(await sdk.register('mq-nobody', randomKey(32), MQTT), 401, 401002, 'unknown');
        const key = await createEnrollment('mq-disabled', { provisioningStatus: 'disabled' });
        assertRefused(await sdk.register('mq-disabled', key, MQTT), 401, 401003, 'disabled');
        await assertNotRegistered('mq-nobody');
        await assertNotRegistered('mq-disabled');
    }));

    it('X.509, individual enrollment: the TLS client certificate attests over MQTT',
        srv.wrap(async () => {
            ok(await sdk.service('createOrUpdateIndividualEnrollment', [{
                registrationId: 'mq-x509-ind',
                attestation: { type: 'x509', x509: { clientCertificates: { primary: {
                    certificate: pki.pem('mq-x509-ind') } } } },
            }]), 'create X.509 enrollment');
            const state = assertAssigned(ok(await sdk.registerX509('mq-x509-ind', pki.pem('mq-x509-ind'),
                pki.key('mq-x509-ind'), MQTT), 'register over MQTT'), 'mq-x509-ind');
            assert.ok(state.x509 && state.x509.certificateInfo, 'no x509 info: ' + JSON.stringify(state));
            assert.strictEqual(String(state.x509.certificateInfo.sha256Thumbprint).toUpperCase(),
                pki.thumbprints('mq-x509-ind').sha256);
        }));

    it('X.509, group on a root: leaf + intermediate sent over MQTT, assigned', srv.wrap(async () => {
        await createGroup('mq-x509-group', { type: 'x509', x509: { signingCertificates: { primary: {
            certificate: pki.pem('rootG') } } } });
        const state = assertAssigned(ok(await sdk.registerX509('mq-x509-grp', pki.chain('mq-x509-grp'),
            pki.key('mq-x509-grp'), MQTT), 'register over MQTT'), 'mq-x509-grp');
        assert.strictEqual(state.x509.enrollmentGroupId, 'mq-x509-group', JSON.stringify(state.x509));
    }));

    it('X.509 certificate of an unknown CA: 401, nothing assigned', srv.wrap(async () => {
        const r = await sdk.registerX509('mq-x509-unknown', pki.pem('mq-x509-unknown'),
            pki.key('mq-x509-unknown'), MQTT);
        assertRefused(r, 401, 401004, 'unknown CA');
        await assertNotRegistered('mq-x509-unknown');
    }));

    it('provd exits 0 on SIGTERM with MQTT clients connected', srv.wrap(async () => {
        sdk.close();
        const s = await openMqttConnection('mq-idle');
        try {
            await srv.stopAndCheck();
        } finally {
            s.destroy();
        }
    }));
});
