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

const connection = await amqp.connect(url);
const channel = await connection.createConfirmChannel();
// Listen for the results first, so none is missed: dial.<status>.<desk> on the events exchange.
const { queue } = await channel.assertQueue("", { exclusive: true });
await channel.bindQueue(queue, `${ns}.events`, `dial.*.${desk}`);

let returned = false;
channel.on("return", (message) => {
  returned = true;
  console.error(`no desk agent listens for ${message.fields.routingKey}; start tcx-bridge agent on ${desk}`);
});
const done = new Promise((resolve) => {
  channel.consume(queue, (message) => {
    const result = JSON.parse(message.content.toString());
    if (result.request_id !== requestId) return;
    console.log(`${result.status} ${result.number}${result.call_id ? ` (call id ${result.call_id})` : ""}`);
    // dialed is followed by confirmed or unconfirmed when confirm_within is set
    if (!(result.status === "dialed" && result.confirm_within)) resolve(result.status);
  }, { noAck: true });
});

channel.publish(
  `${ns}.commands`,
  `desk.${desk}.dial`,
  Buffer.from(JSON.stringify({ request_id: requestId, number, requested_by: "node-crm",
    expires_at: new Date(Date.now() + 60_000).toISOString() })),
  { persistent: true, contentType: "application/json", mandatory: true },
);
await channel.waitForConfirms();
console.log(`queued ${requestId}`);
const status = returned ? "unroutable" : await Promise.race([
  done, new Promise((resolve) => setTimeout(() => resolve("timeout"), 60_000)),
]);
await connection.close();
process.exit(status === "confirmed" || status === "dialed" ? 0 : 1);
