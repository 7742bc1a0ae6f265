'use strict';
/*
 * Service API driven by the unmodified Azure IoT provisioning service SDK
 * (azure-iot-provisioning-service 1.11.2), callback forms only.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert');
const { Provd, Sdk, HUBS, randomKey, deriveKey, ok, failsWith, sleep } = require('../lib/provd.js');

const srv = new Provd({ ip: '127.0.0.22', name: 'service' });
let sdk;

function symkey(primaryKey, secondaryKey)
{
    const a = { type: 'symmetricKey', symmetricKey: {} };
    if (primaryKey !== undefined)
        a.symmetricKey.primaryKey = primaryKey;
    if (secondaryKey !== undefined)
        a.symmetricKey.secondaryKey = secondaryKey;
    return a;
}

function assertKey(k, what)
{
    assert.strictEqual(typeof k, 'string', `${what} missing`);
    assert.match(k, /^[A-Za-z0-9+/]+={0,2}$/, `${what} is not base64: ${k}`);
    const n = Buffer.from(k, 'base64').length;
    assert.ok(n >= 16 && n <= 64, `${what} decodes to ${n} bytes`);
}

/* No key material anywhere in a GET or query answer. */
function assertNoKeys(doc, keys, what)
{
    const text = JSON.stringify(doc);
    for (const k of keys)
        assert.ok(!text.includes(k), `${what} returned a key: ${text}`);
    const sk = doc.attestation && doc.attestation.symmetricKey;
    if (sk) {
        assert.ok(!sk.primaryKey, `${what} has primaryKey`);
        assert.ok(!sk.secondaryKey, `${what} has secondaryKey`);
    }
}

function assertTime(s, what)
{
    assert.strictEqual(typeof s, 'string', `${what} missing`);
    assert.ok(!Number.isNaN(Date.parse(s)) && /Z$/.test(s), `${what} is not RFC 3339 UTC: ${s}`);
}

function assertEtag(e, what)
{
    assert.ok(typeof e === 'string' && e.length > 0, `${what}: no etag`);
}

const call = (method, ...args) => sdk.service(method, args);
const ro = (method, ...args) => sdk.service(method, args, { conn: srv.connString('readonly') });

/*
 * One CRUD suite for both entity kinds: individual enrollments and groups
 * share shapes and semantics, only the id field and the method names differ.
 */
const KINDS = [
    {
        label: 'individual enrollment', idField: 'registrationId', prefix: 'enr',
        put: 'createOrUpdateIndividualEnrollment', get: 'getIndividualEnrollment',
        del: 'deleteIndividualEnrollment', att: 'getIndividualEnrollmentAttestationMechanism',
    },
    {
        label: 'enrollment group', idField: 'enrollmentGroupId', prefix: 'grp',
        put: 'createOrUpdateEnrollmentGroup', get: 'getEnrollmentGroup',
        del: 'deleteEnrollmentGroup', att: 'getEnrollmentGroupAttestationMechanism',
    },
];

function make(kind, id, extra = {})
{
    return Object.assign({ [kind.idField]: id }, extra);
}

describe('service API with the Node service SDK', () => {
    before(async () => {
        await srv.start();
        sdk = await new Sdk(srv).start();
    });

    after(() => {
        if (sdk)
            sdk.close();
        srv.cleanup();
    });

    for (const K of KINDS) {
        it(`${K.label}: create without keys generates them, PUT echoes them`, srv.wrap(async () => {
            const id = `${K.prefix}-gen`;
            const r = ok(await call(K.put, make(K, id, { attestation: symkey() })), 'create');
            assert.strictEqual(r[K.idField], id);
            assert.strictEqual(r.attestation.type, 'symmetricKey');
            assertKey(r.attestation.symmetricKey.primaryKey, 'generated primaryKey');
            assertKey(r.attestation.symmetricKey.secondaryKey, 'generated secondaryKey');
            assert.notStrictEqual(r.attestation.symmetricKey.primaryKey,
                r.attestation.symmetricKey.secondaryKey);
            assertEtag(r.etag, 'PUT');
            assert.strictEqual(r.provisioningStatus, 'enabled');
            assertTime(r.createdDateTimeUtc, 'createdDateTimeUtc');
            assertTime(r.lastUpdatedDateTimeUtc, 'lastUpdatedDateTimeUtc');
            const att = ok(await call(K.att, id), 'attestation mechanism');
            assert.deepStrictEqual(att.symmetricKey, r.attestation.symmetricKey);
        }));

        it(`${K.label}: explicit keys are echoed by PUT, hidden by GET, returned by attestationmechanism`,
            srv.wrap(async () => {
                const id = `${K.prefix}-keys`;
                const pk = randomKey(32);
                const sk = randomKey(64);
                const body = make(K, id, {
                    attestation: symkey(pk, sk),
                    provisioningStatus: 'enabled',
                    initialTwin: { tags: { site: 'lab' }, properties: { desired: { interval: 30 } } },
                    capabilities: { iotEdge: false },
                    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
                    allocationPolicy: 'hashed',
                    iotHubs: [HUBS[1]],
                });
                if (K.idField === 'registrationId')
                    body.deviceId = 'device-of-enr-keys';
                const put = ok(await call(K.put, body), 'create');
                assert.strictEqual(put.attestation.symmetricKey.primaryKey, pk);
                assert.strictEqual(put.attestation.symmetricKey.secondaryKey, sk);
                const get = ok(await call(K.get, id), 'get');
                assert.strictEqual(get[K.idField], id);
                assert.strictEqual(get.etag, put.etag);
                assert.strictEqual(get.attestation.type, 'symmetricKey');
                assertNoKeys(get, [pk, sk], 'GET');
                assert.deepStrictEqual(get.initialTwin.tags, { site: 'lab' });
                assert.deepStrictEqual(get.initialTwin.properties.desired, { interval: 30 });
                assert.deepStrictEqual(get.reprovisionPolicy,
                    { updateHubAssignment: true, migrateDeviceData: false });
                assert.strictEqual(get.allocationPolicy, 'hashed');
                assert.deepStrictEqual(get.iotHubs, [HUBS[1]]);
                assert.strictEqual(get.capabilities.iotEdge, false);
                if (K.idField === 'registrationId')
                    assert.strictEqual(get.deviceId, 'device-of-enr-keys');
                const att = ok(await call(K.att, id), 'attestation mechanism');
                assert.strictEqual(att.type, 'symmetricKey');
                assert.strictEqual(att.symmetricKey.primaryKey, pk);
                assert.strictEqual(att.symmetricKey.secondaryKey, sk);
            }));

        it(`${K.label}: update with the current etag succeeds, a stale etag gets 412`,
            srv.wrap(async () => {
                const id = `${K.prefix}-etag`;
                const keys = symkey(randomKey(32), randomKey(32));
                const v1 = ok(await call(K.put, make(K, id, { attestation: keys })), 'create');
                await sleep(20);
                const v2 = ok(await call(K.put, Object.assign({}, v1, {
                    attestation: keys, initialTwin: { tags: { v: 2 } },
                })), 'update with etag');
                assertEtag(v2.etag, 'update');
                assert.notStrictEqual(v2.etag, v1.etag, 'etag did not change on update');
                assert.strictEqual(v2.createdDateTimeUtc, v1.createdDateTimeUtc);
                assert.ok(Date.parse(v2.lastUpdatedDateTimeUtc) >= Date.parse(v1.lastUpdatedDateTimeUtc));
                const stale = await call(K.put, Object.assign({}, v1, {
                    attestation: keys, initialTwin: { tags: { v: 3 } },
                }));
                const e = failsWith(stale, 412, 'update with a stale etag');
                assert.strictEqual(e.type, 'InvalidEtagError');
                const now = ok(await call(K.get, id), 'get');
                assert.strictEqual(now.etag, v2.etag);
                assert.deepStrictEqual(now.initialTwin.tags, { v: 2 });
                /* no etag at all: unconditional replace */
                const v4 = ok(await call(K.put, make(K, id, {
                    attestation: keys, initialTwin: { tags: { v: 4 } },
                })), 'update without etag');
                assert.notStrictEqual(v4.etag, v2.etag);
            }));

        it(`${K.label}: delete by id, by id + etag, by object`, srv.wrap(async () => {
            const ids = ['a', 'b', 'c'].map((x) => `${K.prefix}-del-${x}`);
            const made = [];
            for (const id of ids)
                made.push(ok(await call(K.put, make(K, id, { attestation: symkey() })), `create ${id}`));
            /* by id */
            ok(await call(K.del, ids[0]), 'delete by id');
            failsWith(await call(K.get, ids[0]), 404, 'get after delete');
            failsWith(await call(K.del, ids[0]), 404, 'second delete');
            /* by id + etag */
            failsWith(await call(K.del, ids[1], '"not-the-etag"'), 412, 'delete with a wrong etag');
            ok(await call(K.get, ids[1]), 'still there after the failed delete');
            ok(await call(K.del, ids[1], made[1].etag), 'delete by id + etag');
            failsWith(await call(K.get, ids[1]), 404, 'get after delete');
            /* by object (its etag goes into If-Match) */
            failsWith(await call(K.del, Object.assign({}, made[2], { etag: '"stale"' })), 412,
                'delete by object with a stale etag');
            ok(await call(K.del, made[2]), 'delete by object');
            failsWith(await call(K.get, ids[2]), 404, 'get after delete');
        }));

        it(`${K.label}: unknown id -> 404 for get, delete and attestation`, srv.wrap(async () => {
            failsWith(await call(K.get, `${K.prefix}-nobody`), 404, 'get');
            failsWith(await call(K.del, `${K.prefix}-nobody`), 404, 'delete');
            failsWith(await call(K.att, `${K.prefix}-nobody`), 404, 'attestation mechanism');
        }));
    }

    it('individual enrollment query pages through every enrollment (token and callback forms)',
        srv.wrap(async () => {
            const ids = [];
            const keys = [];
            for (let i = 0; i < 7; i++) {
                const pk = randomKey(32);
                keys.push(pk);
                ids.push(`q-enr-${i}`);
                ok(await call('createOrUpdateIndividualEnrollment',
                    { registrationId: `q-enr-${i}`, attestation: symkey(pk, randomKey(32)) }), 'create');
            }
            /* page by page, checking headers */
            const h = await sdk.query('enrollments', { pageSize: 3 });
            const seen = [];
            let pages = 0;
            for (;;) {
                const r = await sdk.queryNext(h, 'token');
                ok(r, `page ${pages + 1}`);
                pages++;
                assert.ok(Array.isArray(r.result), 'query answer is not an array');
                assert.ok(r.result.length <= 3, `page of ${r.result.length} > 3 items`);
                assert.strictEqual(r.headers['x-ms-item-type'], 'Enrollment');
                for (const x of r.result)
                    assertNoKeys(x, keys, 'query');
                seen.push(...r.result.map((x) => x.registrationId));
                if (!r.hasMoreResults)
                    break;
                assert.ok(r.continuationToken, 'more results without a token');
                assert.ok(pages < 100, 'query does not end');
            }
            assert.ok(pages >= 3, `only ${pages} pages for at least 7 enrollments with page size 3`);
            assert.strictEqual(new Set(seen).size, seen.length, 'duplicates across pages: ' + seen);
            for (const id of ids)
                assert.ok(seen.includes(id), `${id} missing from the query`);
            const cb = await sdk.queryAll('enrollments', { pageSize: 2, mode: 'callback' });
            const seen2 = cb.items.map((x) => x.registrationId);
            assert.deepStrictEqual(seen2.slice().sort(), seen.slice().sort());
            assert.ok(cb.pages >= 4);
            /* no page size: one request may return everything, the set is the same */
            const all = await sdk.queryAll('enrollments', {});
            assert.deepStrictEqual(all.items.map((x) => x.registrationId).sort(), seen.slice().sort());
        }));

    it('enrollment group query pages through every group', srv.wrap(async () => {
        for (let i = 0; i < 5; i++) {
            ok(await call('createOrUpdateEnrollmentGroup',
                { enrollmentGroupId: `q-grp-${i}`, attestation: symkey() }), 'create');
        }
        const h = await sdk.query('groups', { pageSize: 2 });
        const first = ok(await sdk.queryNext(h, 'token'), 'first page');
        assert.ok(first.length <= 2);
        const { items, pages } = await sdk.queryAll('groups', { pageSize: 2 });
        const ids = items.map((x) => x.enrollmentGroupId);
        assert.strictEqual(new Set(ids).size, ids.length, 'duplicates: ' + ids);
        for (let i = 0; i < 5; i++)
            assert.ok(ids.includes(`q-grp-${i}`), `q-grp-${i} missing`);
        assert.ok(pages >= 3);
        for (const x of items)
            assert.ok(!(x.attestation.symmetricKey && x.attestation.symmetricKey.primaryKey),
                'query returned a group key');
        const r = await sdk.queryNext(await sdk.query('groups', { pageSize: 1 }), 'callback');
        assert.strictEqual(r.headers['x-ms-item-type'], 'EnrollmentGroup');
    }));

    it('runBulkEnrollmentOperation: create, update, updateIfMatchETag, delete, per-item errors',
        srv.wrap(async () => {
            const ids = ['bulk-a', 'bulk-b', 'bulk-c'];
            const keys = {};
            const mk = (id, extra = {}) => Object.assign({
                registrationId: id, attestation: symkey(keys[id], randomKey(32)),
            }, extra);
            for (const id of ids)
                keys[id] = randomKey(32);
            const bulk = (mode, enrollments) => call('runBulkEnrollmentOperation', { mode, enrollments });
            /* create */
            let r = ok(await bulk('create', ids.map((id) => mk(id))), 'bulk create');
            assert.strictEqual(r.isSuccessful, true, JSON.stringify(r));
            assert.ok(!r.errors || r.errors.length === 0, JSON.stringify(r));
            for (const id of ids)
                ok(await call('getIndividualEnrollment', id), `get ${id}`);
            /* create of an existing one: a per-item error */
            keys['bulk-d'] = randomKey(32);
            r = ok(await bulk('create', [mk('bulk-a'), mk('bulk-d')]), 'bulk create with a duplicate');
            assert.strictEqual(r.isSuccessful, false, JSON.stringify(r));
            assert.ok(Array.isArray(r.errors), JSON.stringify(r));
            const dup = r.errors.find((x) => x.registrationId === 'bulk-a');
            assert.ok(dup, 'no error for bulk-a: ' + JSON.stringify(r.errors));
            assert.strictEqual(Math.floor(dup.errorCode / 1000), 409, JSON.stringify(dup));
            assert.ok(!r.errors.find((x) => x.registrationId === 'bulk-d'), JSON.stringify(r.errors));
            /* update */
            r = ok(await bulk('update', ['bulk-a', 'bulk-b'].map((id) => mk(id, { deviceId: `${id}-v2` }))),
                'bulk update');
            assert.strictEqual(r.isSuccessful, true, JSON.stringify(r));
            const a2 = ok(await call('getIndividualEnrollment', 'bulk-a'), 'get');
            assert.strictEqual(a2.deviceId, 'bulk-a-v2');
            const b2 = ok(await call('getIndividualEnrollment', 'bulk-b'), 'get');
            assert.strictEqual(b2.deviceId, 'bulk-b-v2');
            /* updateIfMatchETag with the current etags */
            r = ok(await bulk('updateIfMatchETag', [
                mk('bulk-a', { deviceId: 'bulk-a-v3', etag: a2.etag }),
                mk('bulk-b', { deviceId: 'bulk-b-v3', etag: b2.etag }),
            ]), 'bulk updateIfMatchETag');
            assert.strictEqual(r.isSuccessful, true, JSON.stringify(r));
            assert.strictEqual(ok(await call('getIndividualEnrollment', 'bulk-a'), 'get').deviceId,
                'bulk-a-v3');
            /* ... and with a stale one */
            r = ok(await bulk('updateIfMatchETag', [mk('bulk-a', { deviceId: 'bulk-a-v4', etag: a2.etag })]),
                'bulk updateIfMatchETag stale');
            assert.strictEqual(r.isSuccessful, false, JSON.stringify(r));
            const stale = (r.errors || []).find((x) => x.registrationId === 'bulk-a');
            assert.ok(stale, JSON.stringify(r));
            assert.strictEqual(Math.floor(stale.errorCode / 1000), 412, JSON.stringify(stale));
            assert.strictEqual(ok(await call('getIndividualEnrollment', 'bulk-a'), 'get').deviceId,
                'bulk-a-v3');
            /* delete */
            r = ok(await bulk('delete', ['bulk-a', 'bulk-b', 'bulk-c', 'bulk-d'].map((id) => mk(id))),
                'bulk delete');
            assert.strictEqual(r.isSuccessful, true, JSON.stringify(r));
            for (const id of ['bulk-a', 'bulk-b', 'bulk-c', 'bulk-d'])
                failsWith(await call('getIndividualEnrollment', id), 404, `get ${id} after bulk delete`);
        }));

    it('registration states: get, group query, delete by id / id + etag / object',
        srv.wrap(async () => {
            const g = ok(await call('createOrUpdateEnrollmentGroup',
                { enrollmentGroupId: 'reg-grp', attestation: symkey(randomKey(32), randomKey(32)) }),
            'create group');
            const gk = g.attestation.symmetricKey.primaryKey;
            const ids = ['reg-dev-0', 'reg-dev-1', 'reg-dev-2', 'reg-dev-3'];
            for (const id of ids)
                ok(await sdk.register(id, deriveKey(gk, id)), `register ${id}`);
            /* another group's device must not show up in reg-grp's query */
            const g2 = ok(await call('createOrUpdateEnrollmentGroup', { enrollmentGroupId: 'reg-grp-other',
                attestation: symkey(randomKey(32), randomKey(32)) }), 'create group 2');
            ok(await sdk.register('reg-other-0', deriveKey(g2.attestation.symmetricKey.primaryKey,
                'reg-other-0')), 'register other');

            const h = await sdk.query('registrations', { groupId: 'reg-grp', pageSize: 3 });
            const p1 = await sdk.queryNext(h, 'token');
            ok(p1, 'first page');
            assert.strictEqual(p1.headers['x-ms-item-type'], 'DeviceRegistration');
            const { items, pages } = await sdk.queryAll('registrations', { groupId: 'reg-grp', pageSize: 3 });
            assert.deepStrictEqual(items.map((x) => x.registrationId).sort(), ids);
            assert.ok(pages >= 2);

            const states = {};
            for (const id of ids) {
                const s = ok(await call('getDeviceRegistrationState', id), `get ${id}`);
                assert.strictEqual(s.registrationId, id);
                assert.strictEqual(s.status, 'assigned');
                assert.ok(HUBS.includes(s.assignedHub));
                assert.strictEqual(s.deviceId, id);
                assertEtag(s.etag, 'registration state');
                assertTime(s.createdDateTimeUtc, 'createdDateTimeUtc');
                states[id] = s;
            }
            /* by id */
            ok(await call('deleteDeviceRegistrationState', ids[0]), 'delete by id');
            failsWith(await call('getDeviceRegistrationState', ids[0]), 404, 'get after delete');
            /* by id + etag */
            failsWith(await call('deleteDeviceRegistrationState', ids[1], '"stale"'), 412,
                'delete with a stale etag');
            ok(await call('getDeviceRegistrationState', ids[1]), 'still there');
            ok(await call('deleteDeviceRegistrationState', ids[1], states[ids[1]].etag), 'delete id + etag');
            failsWith(await call('getDeviceRegistrationState', ids[1]), 404, 'get after delete');
            /* by object */
            ok(await call('deleteDeviceRegistrationState', states[ids[2]]), 'delete by object');
            failsWith(await call('getDeviceRegistrationState', ids[2]), 404, 'get after delete');
            const left = await sdk.queryAll('registrations', { groupId: 'reg-grp', pageSize: 3 });
            assert.deepStrictEqual(left.items.map((x) => x.registrationId), [ids[3]]);
            /* a deleted record does not block the device: it registers again */
            ok(await sdk.register(ids[0], deriveKey(gk, ids[0])), 're-register after delete');
            ok(await call('getDeviceRegistrationState', ids[0]), 'record is back');
        }));

    it('read-only policy reads everything but gets 401 on every write', srv.wrap(async () => {
        const pk = randomKey(32);
        const e = ok(await call('createOrUpdateIndividualEnrollment',
            { registrationId: 'ro-enr', attestation: symkey(pk, randomKey(32)) }), 'owner create');
        const g = ok(await call('createOrUpdateEnrollmentGroup',
            { enrollmentGroupId: 'ro-grp', attestation: symkey() }), 'owner create group');
        ok(await sdk.register('ro-enr', pk), 'register');

        const got = ok(await ro('getIndividualEnrollment', 'ro-enr'), 'read-only get');
        assert.strictEqual(got.etag, e.etag);
        ok(await ro('getEnrollmentGroup', 'ro-grp'), 'read-only get group');
        const att = ok(await ro('getIndividualEnrollmentAttestationMechanism', 'ro-enr'), 'ro attestation');
        assert.strictEqual(att.symmetricKey.primaryKey, pk);
        ok(await ro('getDeviceRegistrationState', 'ro-enr'), 'read-only registration state');
        const q = await sdk.query('enrollments', { conn: srv.connString('readonly'), pageSize: 50 });
        ok(await sdk.queryNext(q, 'token'), 'read-only query');

        const writes = [
            ['createOrUpdateIndividualEnrollment', { registrationId: 'ro-enr', attestation: symkey() }],
            ['createOrUpdateIndividualEnrollment', { registrationId: 'ro-new', attestation: symkey() }],
            ['deleteIndividualEnrollment', 'ro-enr'],
            ['createOrUpdateEnrollmentGroup', { enrollmentGroupId: 'ro-grp', attestation: symkey() }],
            ['deleteEnrollmentGroup', 'ro-grp'],
            ['runBulkEnrollmentOperation', { mode: 'delete', enrollments: [{ registrationId: 'ro-enr',
                attestation: symkey() }] }],
            ['deleteDeviceRegistrationState', 'ro-enr'],
        ];
        for (const [m, arg] of writes) {
            const r = await ro(m, arg);
            const err = failsWith(r, 401, `read-only ${m}`);
            assert.strictEqual(err.type, 'UnauthorizedError');
        }
        assert.strictEqual(ok(await call('getIndividualEnrollment', 'ro-enr'), 'get').etag, e.etag);
        assert.strictEqual(ok(await call('getEnrollmentGroup', 'ro-grp'), 'get').etag, g.etag);
        failsWith(await call('getIndividualEnrollment', 'ro-new'), 404, 'ro-new must not exist');
        ok(await call('getDeviceRegistrationState', 'ro-enr'), 'registration still there');
    }));

    it('a wrong key or an unknown policy gets 401', srv.wrap(async () => {
        ok(await call('createOrUpdateIndividualEnrollment',
            { registrationId: 'wk-enr', attestation: symkey() }), 'create');
        const bad = [
            srv.connString('provisioningserviceowner', randomKey(32)),
            srv.connString('readonly', srv.ownerKey),
            srv.connString('nosuchpolicy', srv.ownerKey),
        ];
        for (const conn of bad) {
            failsWith(await sdk.service('getIndividualEnrollment', ['wk-enr'], { conn }), 401,
                `get with ${conn.replace(/SharedAccessKey=.*/, '')}`);
            failsWith(await sdk.service('createOrUpdateIndividualEnrollment',
                [{ registrationId: 'wk-new', attestation: symkey() }], { conn }), 401, 'create');
        }
        failsWith(await call('getIndividualEnrollment', 'wk-new'), 404, 'wk-new must not exist');
    }));

    it('provd exits 0 on SIGTERM', srv.wrap(async () => {
        sdk.close();
        await srv.stopAndCheck();
    }));
});
