// The tokengate flow through a client generated from openapi/openapi.yaml:
// types from openapi-typescript (generated/schema.d.ts, made by e2e/run and
// not committed), calls through openapi-fetch.
//
//   register -> login -> currentUser -> sessions: a second and third login,
//   listSessions, refreshToken (rotation, the previous token within the reuse
//   interval, a bad token), deleteSession, logout?scope=others, changePassword
//   -> logout -> currentUser is rejected
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
  LogoutScope,
  RefreshRequest,
  RegisterRequest,
  Session,
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

// --- sessions -----------------------------------------------------------------

/** The `sid` claim of an access token. */
function sidOf(jwt: string): string {
  const claims: unknown = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString());
  return typeof claims === "object" && claims !== null && "sid" in claims && typeof claims.sid === "string"
    ? claims.sid
    : "";
}

const credentials: LoginRequest = { email: registration.email, password: registration.password };
/** Logs in (a new session) without touching the bearer middleware's token. */
async function loginPair(): Promise<Token | undefined> {
  const saved = token;
  token = null;
  const { data } = await client.POST("/api/v1/login", { body: credentials });
  token = saved;
  return data;
}

/** Calls GET /api/v1/user with `bearer`: the status. */
async function userStatusWith(bearer: string): Promise<number> {
  const saved = token;
  token = bearer;
  const { response } = await client.GET("/api/v1/user");
  token = saved;
  return response.status;
}

// The login above is session 1 (the bearer token); two more logins are two other devices.
const mine: string = token ?? "";
const second = await loginPair();
const third = await loginPair();
check(
  "more-logins-more-sessions",
  second !== undefined && third !== undefined && new Set([mine, second.access_token, third.access_token].map(sidOf)).size === 3,
  `sessions ${[mine, second?.access_token ?? "", third?.access_token ?? ""].map(sidOf).join(", ")}`,
);

// listSessions -> 200 Session[], newest first, the caller's marked current
{
  const { data, error, response } = await client.GET("/api/v1/sessions");
  assertType<Equals<typeof data, Session[] | undefined>>();
  const current = data?.filter((s) => s.current) ?? [];
  const newestFirst = (data ?? []).every((s, i, all) => i === 0 || Date.parse(all[i - 1]?.created_at ?? "") >= Date.parse(s.created_at));
  check(
    "list-sessions-200",
    response.status === 200 && data?.length === 3 && current.length === 1 && current[0]?.id === sidOf(mine) &&
      newestFirst && data.every((s) => typeof s.user_agent === "string" && !Number.isNaN(Date.parse(s.expires_at))),
    `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`,
  );
}

// refreshToken -> 200 Token: a new pair of the same session
let refreshed: Token | undefined;
{
  const presented: RefreshRequest = { refresh_token: second?.refresh_token ?? "" };
  const { data, error, response } = await client.POST("/api/v1/token/refresh", { body: presented });
  assertType<Equals<typeof data, Token | undefined>>();
  assertType<Equals<typeof error, ApiError | undefined>>();
  refreshed = data;
  check(
    "refresh-200-same-session",
    response.status === 200 && data !== undefined && data.refresh_token !== second?.refresh_token &&
      data.access_token !== second?.access_token && sidOf(data.access_token) === sidOf(second?.access_token ?? "") &&
      typeof data.refresh_expires_at === "string",
    `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`,
  );
  check(
    "refreshed-access-token-works",
    data !== undefined && (await userStatusWith(data.access_token)) === 200,
    "GET /api/v1/user with the refreshed access token was refused",
  );
}

// The previous refresh token again, within the reuse interval (another tab): a working pair.
{
  const { data, response } = await client.POST("/api/v1/token/refresh", {
    body: { refresh_token: second?.refresh_token ?? "" },
  });
  check(
    "refresh-previous-within-reuse-interval-200",
    response.status === 200 && data !== undefined && sidOf(data.access_token) === sidOf(second?.access_token ?? "") &&
      (await userStatusWith(data.access_token)) === 200,
    `status ${response.status}`,
  );
}

// A refresh token that is not one -> 401, the typed Error, invalid_grant
{
  const { data, error, response } = await client.POST("/api/v1/token/refresh", {
    body: { refresh_token: "not-a-refresh-token" },
  });
  const body: ApiError | undefined = error;
  check(
    "refresh-401-invalid-grant",
    response.status === 401 && data === undefined && body?.error === "invalid_grant" &&
      response.headers.get("www-authenticate") === 'Bearer realm="tokengate"',
    `status ${response.status}, error ${JSON.stringify(error)}, www-authenticate ${response.headers.get("www-authenticate")}`,
  );
}

// deleteSession -> 204; its tokens stop working; the same id again -> 404
{
  const id = sidOf(second?.access_token ?? "");
  const { data, error, response } = await client.DELETE("/api/v1/sessions/{id}", { params: { path: { id } } });
  check(
    "delete-session-204",
    response.status === 204 && data === undefined && error === undefined,
    `status ${response.status}, error ${JSON.stringify(error)}`,
  );
  const grant = await client.POST("/api/v1/token/refresh", { body: { refresh_token: refreshed?.refresh_token ?? "" } });
  check(
    "deleted-session-tokens-refused",
    (await userStatusWith(refreshed?.access_token ?? "")) === 401 && grant.response.status === 401 &&
      grant.error?.error === "invalid_grant",
    `refresh after delete: ${grant.response.status} ${JSON.stringify(grant.error)}`,
  );
  const again = await client.DELETE("/api/v1/sessions/{id}", { params: { path: { id } } });
  const notFound: ApiError | undefined = again.error;
  check(
    "delete-session-again-404",
    again.response.status === 404 && notFound?.error === "not_found",
    `status ${again.response.status}, error ${JSON.stringify(again.error)}`,
  );
}

// logout?scope=others -> 204: the third session ends, this one stays
{
  const scope: LogoutScope = "others";
  const { error, response } = await client.DELETE("/api/v1/logout", { params: { query: { scope } } });
  const sessions = await client.GET("/api/v1/sessions");
  check(
    "logout-others-204",
    response.status === 204 && error === undefined && (await userStatusWith(third?.access_token ?? "")) === 401 &&
      (await userStatusWith(mine)) === 200 && sessions.data?.length === 1 && sessions.data[0]?.current === true,
    `status ${response.status}, error ${JSON.stringify(error)}, sessions ${JSON.stringify(sessions.data)}`,
  );
}

// A scope the document does not list is a type error, and a 422 at run time.
{
  // @ts-expect-error "everywhere" is not a LogoutScope
  const { error, response } = await client.DELETE("/api/v1/logout", { params: { query: { scope: "everywhere" } } });
  check(
    "logout-unknown-scope-422",
    response.status === 422 && error?.error === "validation_failed",
    `status ${response.status}, error ${JSON.stringify(error)}`,
  );
}

// changePassword: a wrong current password -> 403; the right one -> 200 Token,
// a new pair for this session, and the token that asked is refused from now on.
{
  const wrong = await client.PUT("/api/v1/user/password", {
    body: { current_password: "not the password", new_password: "a new long password" },
  });
  check(
    "change-password-403-wrong-current",
    wrong.response.status === 403 && wrong.error?.error === "invalid_credentials",
    `status ${wrong.response.status}, error ${JSON.stringify(wrong.error)}`,
  );
  const { data, error, response } = await client.PUT("/api/v1/user/password", {
    body: { current_password: registration.password, new_password: "a new long password" },
  });
  assertType<Equals<typeof data, Token | undefined>>();
  check(
    "change-password-200-new-pair",
    response.status === 200 && data !== undefined && sidOf(data.access_token) === sidOf(mine) &&
      (await userStatusWith(mine)) === 401 && (await userStatusWith(data.access_token)) === 200,
    `status ${response.status}, data ${JSON.stringify(data)}, error ${JSON.stringify(error)}`,
  );
  token = data?.access_token ?? null;
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
