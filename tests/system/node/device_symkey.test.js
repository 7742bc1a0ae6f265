'use strict';
/*
 * Device API with symmetric keys, driven by the unmodified Azure IoT device SDK
 * (azure-iot-provisioning-device + -http + azure-iot-security-symmetric-key).
 * Enrollments are created through the unmodified service SDK.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert');
const { Provd, Sdk, HUBS, randomKey, deriveKey, ok, failsWith, sleep } = require('../lib/provd.js');

const srv = new Provd({ ip: '127.0.0.21', name: 'device_symkey' });
let sdk;

function symkey(primaryKey, secondaryKey)
{
    return { type: 'symmetricKey', symmetricKey: { primaryKey, secondaryKey } };
}

async function createEnrollment(registrationId, extra = {})
{
    const primaryKey = randomKey(32);
    const secondaryKey = randomKey(32);
    const e = Object.assign({ registrationId, attestation: symkey(primaryKey, secondaryKey) }, extra);
    const r = ok(await sdk.service('createOrUpdateIndividualEnrollment', [e]), 'create enrollment');
    assert.strictEqual(r.registrationId.toLowerCase(), registrationId.toLowerCase());
    return { primaryKey, secondaryKey, enrollment: r };
}

async function createGroup(enrollmentGroupId, extra = {})
{
    const primaryKey = randomKey(extra.keyBytes || 32);
    const secondaryKey = randomKey(extra.keyBytes || 32);
    delete extra.keyBytes;
    const g = Object.assign({ enrollmentGroupId, attestation: symkey(primaryKey, secondaryKey) }, extra);
    const r = ok(await sdk.service('createOrUpdateEnrollmentGroup', [g]), 'create group');
    assert.strictEqual(r.enrollmentGroupId, enrollmentGroupId);
    return { primaryKey, secondaryKey, group: r };
}

/* Checks an assigned registrationState as the device SDK returns it. */
function assertAssigned(state, registrationId, deviceId)
{
    assert.ok(state && typeof state === 'object', 'no registration state: ' + JSON.stringify(state));
    assert.strictEqual(state.status, 'assigned', JSON.stringify(state));
    assert.strictEqual(state.registrationId.toLowerCase(), registrationId.toLowerCase());
    assert.ok(HUBS.includes(state.assignedHub), `assignedHub ${state.assignedHub} is not a linked hub`);
    assert.strictEqual(state.deviceId, deviceId);
    for (const f of ['createdDateTimeUtc', 'lastUpdatedDateTimeUtc']) {
        assert.strictEqual(typeof state[f], 'string', `${f} missing: ${JSON.stringify(state)}`);
        assert.ok(!Number.isNaN(Date.parse(state[f])), `${f} unparsable: ${state[f]}`);
        assert.match(state[f], /Z$/, `${f} is not UTC`);
    }
    assert.ok(typeof state.etag === 'string' && state.etag.length > 0, 'no etag');
}

/* The device must have no registration record (service view). */
async function assertNotRegistered(registrationId)
{
    const r = await sdk.service('getDeviceRegistrationState', [registrationId]);
    failsWith(r, 404, `getDeviceRegistrationState(${registrationId})`);
}

describe('device API: symmetric key with the Node SDK over HTTPS', () => {
    before(async () => {
        await srv.start();
        sdk = await new Sdk(srv).start();
    });

    after(() => {
        if (sdk)
            sdk.close();
        srv.cleanup();
    });

    it('individual enrollment without deviceId: assigned, deviceId = registration id',
        srv.wrap(async () => {
            const { primaryKey } = await createEnrollment('sym-ind-1');
            const state = ok(await sdk.register('sym-ind-1', primaryKey), 'register');
            assertAssigned(state, 'sym-ind-1', 'sym-ind-1');
            assert.strictEqual(state.substatus, 'initialAssignment');
            const rec = ok(await sdk.service('getDeviceRegistrationState', ['sym-ind-1']), 'record');
            assert.strictEqual(rec.status, 'assigned');
            assert.strictEqual(rec.assignedHub, state.assignedHub);
            assert.strictEqual(rec.deviceId, 'sym-ind-1');
        }));

    it('individual enrollment with deviceId: the device gets that deviceId', srv.wrap(async () => {
        const { primaryKey } = await createEnrollment('sym-ind-2', { deviceId: 'custom-device-2' });
        const state = ok(await sdk.register('sym-ind-2', primaryKey), 'register');
        assertAssigned(state, 'sym-ind-2', 'custom-device-2');
    }));

    it('the secondary key works too', srv.wrap(async () => {
        const { secondaryKey } = await createEnrollment('sym-ind-3');
        const state = ok(await sdk.register('sym-ind-3', secondaryKey), 'register with secondary');
        assertAssigned(state, 'sym-ind-3', 'sym-ind-3');
    }));

    it('enrollment created without keys: the generated key registers', srv.wrap(async () => {
        const e = {
            registrationId: 'sym-ind-gen',
            attestation: { type: 'symmetricKey' },
        };
        ok(await sdk.service('createOrUpdateIndividualEnrollment', [e]), 'create without keys');
        const att = ok(await sdk.service('getIndividualEnrollmentAttestationMechanism',
            ['sym-ind-gen']), 'attestation mechanism');
        const state = ok(await sdk.register('sym-ind-gen', att.symmetricKey.primaryKey), 'register');
        assertAssigned(state, 'sym-ind-gen', 'sym-ind-gen');
    }));

    it('keys of 16 and 64 bytes (the limits) work, individual and group', srv.wrap(async () => {
        for (const n of [16, 64]) {
            const primaryKey = randomKey(n);
            ok(await sdk.service('createOrUpdateIndividualEnrollment', [{
                registrationId: `sym-len-${n}`, attestation: symkey(primaryKey, randomKey(n)),
            }]), `create with ${n}-byte keys`);
            assertAssigned(ok(await sdk.register(`sym-len-${n}`, primaryKey), `register ${n}-byte key`),
                `sym-len-${n}`, `sym-len-${n}`);
            const g = await createGroup(`sym-group-len-${n}`, { keyBytes: n });
            const id = `grp-len-${n}-dev`;
            assertAssigned(ok(await sdk.register(id, deriveKey(g.primaryKey, id)),
                `register with a key derived from a ${n}-byte group key`), id, id);
        }
    }));

    it('group enrollment: a derived key provisions and the record is listed under the group',
        srv.wrap(async () => {
            const { primaryKey, secondaryKey } = await createGroup('sym-group-1');
            const ids = ['grp1-dev-a', 'grp1-dev-b'];
            const a = ok(await sdk.register(ids[0], deriveKey(primaryKey, ids[0])), 'register a');
            assertAssigned(a, ids[0], ids[0]);
            /* a key derived from the group's secondary key works as well */
            const b = ok(await sdk.register(ids[1], deriveKey(secondaryKey, ids[1])), 'register b');
            assertAssigned(b, ids[1], ids[1]);
            const { items } = await sdk.queryAll('registrations', { groupId: 'sym-group-1', pageSize: 1 });
            const listed = items.map((x) => x.registrationId.toLowerCase()).sort();
            assert.deepStrictEqual(listed, ids.slice().sort());
            for (const x of items) {
                assert.strictEqual(x.status, 'assigned');
                assert.ok(HUBS.includes(x.assignedHub));
            }
        }));

    it('group key itself (not derived) is refused with 401', srv.wrap(async () => {
        const { primaryKey } = await createGroup('sym-group-raw');
        const r = await sdk.register('grp-raw-dev', primaryKey);
        failsWith(r, 401, 'register with the raw group key');
        await assertNotRegistered('grp-raw-dev');
    }));

    it('re-registration of an assigned device: same hub, created kept, lastUpdated advances',
        srv.wrap(async () => {
            const { primaryKey } = await createEnrollment('sym-rereg');
            const first = ok(await sdk.register('sym-rereg', primaryKey), 'first register');
            assertAssigned(first, 'sym-rereg', 'sym-rereg');
            const rec1 = ok(await sdk.service('getDeviceRegistrationState', ['sym-rereg']), 'record 1');
            await sleep(1100);
            const second = ok(await sdk.register('sym-rereg', primaryKey), 'second register');
            assertAssigned(second, 'sym-rereg', 'sym-rereg');
            assert.strictEqual(second.assignedHub, first.assignedHub, 'hashed allocation moved the device');
            assert.strictEqual(second.createdDateTimeUtc, first.createdDateTimeUtc);
            assert.ok(Date.parse(second.lastUpdatedDateTimeUtc) > Date.parse(first.lastUpdatedDateTimeUtc),
                `lastUpdated did not advance: ${first.lastUpdatedDateTimeUtc} -> ${second.lastUpdatedDateTimeUtc}`);
            assert.notStrictEqual(second.etag, first.etag, 'etag unchanged on re-registration');
            const rec2 = ok(await sdk.service('getDeviceRegistrationState', ['sym-rereg']), 'record 2');
            assert.strictEqual(rec2.createdDateTimeUtc, rec1.createdDateTimeUtc);
            assert.ok(Date.parse(rec2.lastUpdatedDateTimeUtc) > Date.parse(rec1.lastUpdatedDateTimeUtc));
        }));

    it('re-registration of a group device keeps working', srv.wrap(async () => {
        const { primaryKey } = await createGroup('sym-group-2');
        const key = deriveKey(primaryKey, 'grp2-dev');
        const first = ok(await sdk.register('grp2-dev', key), 'first');
        const second = ok(await sdk.register('grp2-dev', key), 'second');
        assertAssigned(second, 'grp2-dev', 'grp2-dev');
        assert.strictEqual(second.assignedHub, first.assignedHub);
        assert.strictEqual(second.createdDateTimeUtc, first.createdDateTimeUtc);
    }));

    it('a device payload is accepted and echoed in registrationState.payload', srv.wrap(async () => {
        const { primaryKey } = await createEnrollment('sym-payload');
        const payload = { model: 'thermo-9', fw: '1.2.3', nested: { a: [1, 2, 3], ok: true } };
        const state = ok(await sdk.register('sym-payload', primaryKey, { payload }), 'register');
        assertAssigned(state, 'sym-payload', 'sym-payload');
        assert.deepStrictEqual(state.payload, payload);
    }));

    it('wrong key: 401 and nothing assigned', srv.wrap(async () => {
        await createEnrollment('sym-wrongkey');
        const r = await sdk.register('sym-wrongkey', randomKey(32));
        failsWith(r, 401, 'register with a wrong key');
        assert.strictEqual(r.error.type, 'UnauthorizedError');
        await assertNotRegistered('sym-wrongkey');
    }));

    it('unknown registration id: 401', srv.wrap(async () => {
        const r = await sdk.register('sym-nobody', randomKey(32));
        failsWith(r, 401, 'register without an enrollment');
        await assertNotRegistered('sym-nobody');
    }));

    it('disabled individual enrollment: 401 and nothing assigned', srv.wrap(async () => {
        const { primaryKey } = await createEnrollment('sym-disabled', { provisioningStatus: 'disabled' });
        const r = await sdk.register('sym-disabled', primaryKey);
        failsWith(r, 401, 'register a disabled device');
        await assertNotRegistered('sym-disabled');
    }));

    it('disabled group: 401 and nothing assigned', srv.wrap(async () => {
        const { primaryKey } = await createGroup('sym-group-off', { provisioningStatus: 'disabled' });
        const r = await sdk.register('grpoff-dev', deriveKey(primaryKey, 'grpoff-dev'));
        failsWith(r, 401, 'register into a disabled group');
        await assertNotRegistered('grpoff-dev');
    }));

    it('a disabled individual enrollment blocks a device of an enabled group', srv.wrap(async () => {
        const { primaryKey } = await createGroup('sym-group-3');
        await createEnrollment('grp3-blocked', { provisioningStatus: 'disabled' });
        const r = await sdk.register('grp3-blocked', deriveKey(primaryKey, 'grp3-blocked'));
        assert.ok(!r.ok, 'a blocked device was provisioned: ' + JSON.stringify(r.result));
        assert.ok([401, 403].includes(r.error.statusCode), JSON.stringify(r.error));
        await assertNotRegistered('grp3-blocked');
        /* and once the blocking entry is gone, the group takes it */
        ok(await sdk.service('deleteIndividualEnrollment', ['grp3-blocked']), 'delete blocker');
        const s = ok(await sdk.register('grp3-blocked', deriveKey(primaryKey, 'grp3-blocked')), 'register');
        assertAssigned(s, 'grp3-blocked', 'grp3-blocked');
    }));

    it('re-enabling a disabled enrollment lets the device register', srv.wrap(async () => {
        const { primaryKey, secondaryKey, enrollment } = await createEnrollment('sym-reenable',
            { provisioningStatus: 'disabled' });
        failsWith(await sdk.register('sym-reenable', primaryKey), 401, 'while disabled');
        const upd = Object.assign({}, enrollment, {
            provisioningStatus: 'enabled', attestation: symkey(primaryKey, secondaryKey),
        });
        ok(await sdk.service('createOrUpdateIndividualEnrollment', [upd]), 'enable');
        const s = ok(await sdk.register('sym-reenable', primaryKey), 'register after enabling');
        assertAssigned(s, 'sym-reenable', 'sym-reenable');
    }));

    it('provd exits 0 on SIGTERM', srv.wrap(async () => {
        sdk.close();
        await srv.stopAndCheck();
    }));
});
