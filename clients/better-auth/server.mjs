// A real Better Auth server for the tests (and for trying the API by hand): email and password
// sign-up/sign-in, the jwt plugin (JWKS at /api/auth/jwks, tokens at /api/auth/token and in the
// set-auth-jwt header of /api/auth/get-session), PostgreSQL through node-postgres. Plus one route
// that does what a Next.js route handler does to mint an HS256 token for the API with the shared
// secret: GET /api/hs256-token. Configuration from the environment, see README.md.
import http from "node:http";

import { betterAuth } from "better-auth";
import { fromNodeHeaders, toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";
import { SignJWT } from "jose";
import pg from "pg";

const KEY_ALGORITHMS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"];
const HS256_TTL_SECONDS = 15 * 60;

function fail(message) {
  console.error(`better-auth server: ${message}`);
  process.exit(2);
}

const env = process.env;
const host = env.BA_HOST || "127.0.0.1";
const port = Number(env.BA_PORT || "3000");
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`BA_PORT is not a port: ${env.BA_PORT}`);
const baseURL = (env.BA_BASE_URL || `http://${host}:${port}`).replace(/\/+$/, "");
const secret = env.BA_SECRET;
if (!secret || Buffer.byteLength(secret) < 32) fail("BA_SECRET must be set, at least 32 bytes");
const databaseURL = env.BA_DATABASE_URL;
if (!databaseURL) fail("BA_DATABASE_URL must be set (postgresql://...; a Unix socket dir as ?host=/dir)");
const keyAlg = env.BA_KEY_ALG || undefined; // unset: the plugin's default (EdDSA, Ed25519)
if (keyAlg && !KEY_ALGORITHMS.includes(keyAlg)) fail(`BA_KEY_ALG must be one of ${KEY_ALGORITHMS.join(", ")}`);
const idMode = env.BA_ID || "default";
if (!["default", "uuid"].includes(idMode)) fail("BA_ID must be default or uuid");
const rotationSeconds = env.BA_ROTATION_SECONDS ? Number(env.BA_ROTATION_SECONDS) : undefined;
if (rotationSeconds !== undefined && !(rotationSeconds > 0)) fail("BA_ROTATION_SECONDS must be a positive number");

const pool = new pg.Pool({ connectionString: databaseURL, max: 5 });

const jwks = {};
if (keyAlg) jwks.keyPairConfig = keyAlg === "EdDSA" ? { alg: "EdDSA", crv: "Ed25519" } : { alg: keyAlg };
if (rotationSeconds !== undefined) jwks.rotationInterval = rotationSeconds;

const auth = betterAuth({
  baseURL,
  secret,
  database: pool,
  emailAndPassword: { enabled: true },
  plugins: [jwt({ jwks })],
  advanced: idMode === "uuid" ? { database: { generateId: "uuid" } } : {},
});

const authHandler = toNodeHandler(auth);
const hmacKey = new TextEncoder().encode(secret);

// What a Next.js route handler (app/api/token/route.ts) does: check the Better Auth session, then
// sign {sub: user.id} with the shared secret. iss and aud only when asked (?iss=...&aud=...).
async function hs256Token(req, res, url) {
  const session = await auth.api.getSession({ headers: fromNodeHeaders(req.headers) });
  if (!session) {
    res.writeHead(401, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "no session" }));
    return;
  }
  const now = Math.floor(Date.now() / 1000);
  const token = new SignJWT({ sub: session.user.id })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuedAt(now)
    .setExpirationTime(now + HS256_TTL_SECONDS);
  const iss = url.searchParams.get("iss");
  const aud = url.searchParams.get("aud");
  if (iss) token.setIssuer(iss);
  if (aud) token.setAudience(aud);
  res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify({ token: await token.sign(hmacKey) }));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, baseURL);
  if (url.pathname.startsWith("/api/auth/")) return authHandler(req, res);
  if (req.method === "GET" && url.pathname === "/api/hs256-token") {
    return hs256Token(req, res, url).catch((error) => {
      console.error(error);
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "internal error" }));
    });
  }
  res.writeHead(404, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: "not found" }));
});

async function main() {
  const context = await auth.$context;
  await context.runMigrations();
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  console.log(`ready http://${host}:${server.address().port}`);
}

function shutdown() {
  server.close();
  server.closeAllConnections();
  pool.end().finally(() => process.exit(0));
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
