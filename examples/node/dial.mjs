// Queue a dial request for a desk and wait for its results, as a CRM server in Node.js would.
//   npm install amqplib
//   AMQP_URL=amqp://guest:guest@localhost:5672 DESK=DESK-07 node dial.mjs "+41 44 123 45 67"
import amqp from "amqplib";
import { randomUUID } from "node:crypto";

const url = process.env.AMQP_URL ?? "amqp://guest:guest@localhost:5672";
const ns = process.env.TCX_NAMESPACE ?? "tcx";
const desk = process.env.DESK ?? "DESK-07";
const number = process.argv[2] ?? "+41 44 123 45 67";
const requestId = `crm-${randomUUID()}`;

// user_id: the broker checks it against the login, and the desk agent acts only on requests that carry it
const userId = decodeURIComponent(new URL(url).username || "guest");

const connection = await amqp.connect(url);
const channel = await connection.createConfirmChannel();
// Read the results from the stream tcx.dial-results (declared by `tcx-bridge topology declare`), from
// a second before publishing, so none is missed; no queue of our own (the tcx-dialer user may not make one).
await channel.prefetch(100);
const since = { "!": "timestamp", value: Math.floor(Date.now() / 1000) - 1 }; // an AMQP timestamp, seconds
const queue = `${ns}.dial-results`;

let returned = false;
channel.on("return", (message) => {
  returned = true;
  console.error(`no desk agent listens for ${message.fields.routingKey}; start tcx-bridge agent on ${desk}`);
});
const done = new Promise((resolve) => {
  channel.consume(queue, (message) => {
    channel.ack(message);
    const result = JSON.parse(message.content.toString());
    if (result.request_id !== requestId) return;
    // believe a result only from a desk's own user (or an admin's): the broker vouches for user_id
    const from = message.properties.userId ?? "";
    if (from.startsWith("desk-") && from !== `desk-${result.desk}`) return;
    console.log(`${result.status} ${result.number}${result.call_id ? ` (call id ${result.call_id})` : ""}`);
    // dialed is followed by confirmed or unconfirmed when confirm_within is set
    if (!(result.status === "dialed" && result.confirm_within)) resolve(result.status);
  }, { noAck: false, arguments: { "x-stream-offset": since } });
});

channel.publish(
  `${ns}.commands`,
  `desk.${desk}.dial`,
  Buffer.from(JSON.stringify({ request_id: requestId, number, requested_by: "node-crm",
    expires_at: new Date(Date.now() + 60_000).toISOString() })),
  { persistent: true, contentType: "application/json", mandatory: true, userId },
);
await channel.waitForConfirms();
console.log(`queued ${requestId}`);
const status = returned ? "unroutable" : await Promise.race([
  done, new Promise((resolve) => setTimeout(() => resolve("timeout"), 60_000)),
]);
await connection.close();
process.exit(status === "confirmed" || status === "dialed" ? 0 : 1);
