'use strict';
/*
 * One device registration with the unmodified Azure IoT SDK, for shell tests:
 *   NODE_EXTRA_CA_CERTS=ca.pem node lib/sdk_register.js HOST SCOPE REGID KEY_B64 [http|mqtt] [PAYLOAD_JSON]
 * KEY_B64 is the device's symmetric key (for a group member: its derived key).
 * Prints the registration result as one JSON line and exits 0, or prints the
 * error and exits 1. The SDKs connect to port 443 (HTTPS) or 8883 (MQTT) of HOST.
 */
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Mqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const [host, scope, regId, key, transport = 'http', payload] = process.argv.slice(2);
if (!key) {
    console.error('usage: sdk_register.js HOST SCOPE REGID KEY_B64 [http|mqtt] [PAYLOAD_JSON]');
    process.exit(2);
}
const security = new SymmetricKeySecurityClient(regId, key);
const client = ProvisioningDeviceClient.create(host, scope,
                                               transport === 'mqtt' ? new Mqtt() : new Http(),
                                               security);
if (payload)
    client.setProvisioningPayload(JSON.parse(payload));
const timer = setTimeout(() => {
    console.error('no result within 60 s');
    process.exit(1);
}, 60000);
client.register((err, result) => {
    clearTimeout(timer);
    if (err) {
        console.error(String(err && (err.message || err)));
        process.exit(1);
    }
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
});
