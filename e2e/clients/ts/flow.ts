// The tokengate flow through a client generated from openapi/openapi.yaml:
// types from openapi-typescript (generated/schema.d.ts, made by e2e/run and
// not committed), calls through openapi-fetch.
//
//   register -> login -> currentUser -> logout -> currentUser is rejected
//
// The file must type-check with `tsc --noEmit` in strict mode: the request
// bodies, the success bodies and the typed 401 error body all come from the
// generated types, so a change in the document that breaks a client breaks
// this build. Run (after tsc) with TOKENGATE_URL=http://127.0.0.1:PORT.
import createClient, { type Middleware } from "openapi-fetch";
import type {
  paths,
  Error as ApiError,
  LoginRequest,
  RegisterRequest,
  Token,
  User,
} from "./generated/schema.js";

/** Compile-time check that two types are the same. */
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<_T extends true>(): void {}

const baseUrl = process.env.TOKENGATE_URL;
if (!baseUrl) throw new globalThis.Error("TOKENGATE_URL is not set (run this through e2e/run)");

let failures = 0;
function check(name: string, ok: boolean, detail: string): void {
  if (ok) {
    console.log(`ok - ts-client-${name}`);
  } else {
    failures += 1;
    console.log(`not ok - ts-client-${name}: ${detail}`);
  }
}

// The token is held here and added to each request by a middleware.
let token: string | null = null;
const bearer: Middleware = {
  onRequest({ request }) {
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
};

const client = createClient<paths>({ baseUrl });
client.use(bearer);

const stamp = `${Date.now()}-${process.pid}`;
const registration: RegisterRequest = {
  name: "TypeScript Ada",
  email: `ts-${stamp}@Example.com`,
  password: "correct horse battery",
};

// register -> 201 User
{
  const { data, error, response } = await client.POST("/api/v1/register", { body: registration });
  assertType<Equals<typeof data, User | undefined>>();
  assertType<Equals<typeof error, ApiError | undefined>>();
  check(
    "register-201",
    response.status === 201 && data !== undefined && data.email === registration.email.toLowerCase(),
    `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`,
  );
}

// login -> 200 Token
{
  const credentials: LoginRequest = { email: registration.email, password: registration.password };
  const { data, error, response } = await client.POST("/api/v1/login", { body: credentials });
  assertType<Equals<typeof data, Token | undefined>>();
  check(
    "login-200",
    response.status === 200 && data?.token_type === "Bearer" && typeof data.expires_in === "number",
    `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`,
  );
  token = data?.access_token ?? null;
}

// currentUser -> 200 User
let me: User | undefined;
{
  const { data, error, response } = await client.GET("/api/v1/user");
  assertType<Equals<typeof data, User | undefined>>();
  me = data;
  check(
    "current-user-200",
    response.status === 200 && data?.email === registration.email.toLowerCase() && Number.isInteger(data.id),
    `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`,
  );
}

// logout -> 204, no body
const revoked = token;
{
  const { data, error, response } = await client.DELETE("/api/v1/logout");
  check(
    "logout-204",
    response.status === 204 && data === undefined && error === undefined && response.headers.get("content-type") === null,
    `status ${response.status}, content-type ${response.headers.get("content-type")}, error ${JSON.stringify(error)}`,
  );
}

// currentUser with the same token -> 401 with the typed Error body
{
  token = revoked;
  const { data, error, response } = await client.GET("/api/v1/user");
  let detail = `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`;
  let ok = false;
  if (error !== undefined) {
    // `error` is the generated Error type: no cast, no `any`.
    const body: ApiError = error;
    const code: string = body.error;
    const challenge = response.headers.get("www-authenticate") ?? "";
    detail += `, www-authenticate ${challenge}`;
    ok = response.status === 401 && code === "invalid_token" && typeof body.message === "string" &&
      body.fields === undefined && challenge.startsWith('Bearer realm="tokengate", error="invalid_token"');
  }
  check("current-user-401-invalid-token", ok, detail);
}

// Without a token at all -> 401 unauthenticated (also typed).
{
  token = null;
  const { error, response } = await client.GET("/api/v1/user");
  check(
    "current-user-401-unauthenticated",
    response.status === 401 && error?.error === "unauthenticated",
    `status ${response.status}, error ${JSON.stringify(error)}`,
  );
}

// A validation error carries the typed `fields` map.
{
  const { error, response } = await client.POST("/api/v1/register", {
    body: { name: "", email: "not an address", password: "short" },
  });
  const fields: Record<string, string[]> | undefined = error?.fields;
  check(
    "register-422-fields",
    response.status === 422 && error?.error === "validation_failed" && fields !== undefined &&
      ["name", "email", "password"].every((f) => (fields[f]?.length ?? 0) > 0),
    `status ${response.status}, error ${JSON.stringify(error)}`,
  );
}

void me;
process.exit(failures ? 1 : 0);
