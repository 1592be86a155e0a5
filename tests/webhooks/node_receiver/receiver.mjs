// A webhook receiver in Node that verifies every request with the official JavaScript library
// (npm `standardwebhooks`), as README's Next.js route handler does. Settings from the
// environment: PORT, WEBHOOK_SECRET. Prints one JSON line per request: {verified, id, type} or
// {verified: false, error}; answers 204, or 400 when the signature does not verify.
import http from "node:http";
import standardwebhooks from "standardwebhooks";

const { Webhook } = standardwebhooks;
const webhook = new Webhook(process.env.WEBHOOK_SECRET);

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    try {
      // Throws unless a signature matches and the timestamp is within 5 minutes.
      const event = webhook.verify(body, request.headers);
      console.log(JSON.stringify({ verified: true, id: request.headers["webhook-id"], type: event.type }));
      response.writeHead(204).end();
    } catch (error) {
      console.log(JSON.stringify({ verified: false, error: String(error) }));
      response.writeHead(400).end();
    }
  });
});
server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log(JSON.stringify({ listening: true })));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
