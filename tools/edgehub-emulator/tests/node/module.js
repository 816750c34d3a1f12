// A module written with Azure's Node.js device SDK, run against the edgeHub emulator by test_node_module.py.
// It prints one JSON object per line for every event, so the test can follow what the module sees.
'use strict';

const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function report(event, data) {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

async function main() {
  const client = await ModuleClient.fromEnvironment(Mqtt);
  client.on('error', (err) => report('error', { message: String(err) }));
  client.on('inputMessage', (inputName, msg) => {
    const properties = {};
    for (let i = 0; i < msg.properties.count(); i += 1) {
      const item = msg.properties.getItem(i);
      properties[item.key] = item.value;
    }
    report('input', { inputName, body: msg.getData().toString('utf8'), properties });
    client.complete(msg, () => {});
  });
  await client.open();
  client.onMethod('echo', (request, response) => {
    report('method', { name: request.methodName, payload: request.payload });
    response.send(200, { echo: request.payload, sdk: 'node' }, () => {});
  });
  const twin = await client.getTwin();
  twin.on('properties.desired', (desired) => report('desired', { desired }));
  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ sdk: 'node', ready: true }, (err) => (err ? reject(err) : resolve()));
  });
  report('twin', { desired: twin.properties.desired });

  const message = new Message(JSON.stringify({ from: 'node' }));
  message.messageId = 'node-message-1';
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  message.properties.add('severity', 'high');
  message.properties.add('sdk', 'node');
  await client.sendOutputEvent('out1', message);
  report('sent', { messageId: message.messageId });
  report('ready', {});

  const stop = () => client.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  report('fatal', { message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
