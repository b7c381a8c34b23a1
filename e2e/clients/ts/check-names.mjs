// Checks the names openapi-typescript generated from openapi/openapi.yaml:
// the schema types must be the document's own clean names (User, Token,
// Session, ...), not InlineResponse200-style or numbered ones, and the
// operations must be named by their operationIds. Every name listed below
// must be there; a name the document adds later passes if it is clean (its
// root type is the schema's own name) and is shown as a `#` line.
//
//   node e2e/clients/ts/check-names.mjs e2e/clients/ts/generated/schema.d.ts
import fs from 'node:fs';

const file = process.argv[2];
const source = fs.readFileSync(file, 'utf8');
let failures = 0;
function check(name, ok, detail) {
  if (ok) console.log(`ok - ts-client-${name}`);
  else {
    failures += 1;
    console.log(`not ok - ts-client-${name}: ${detail}`);
  }
}

const expectedSchemas = ['ChangePasswordRequest', 'Error', 'Health', 'Jwk', 'JwkSet', 'LoginRequest', 'LogoutScope',
  'RefreshRequest', 'RegisterRequest', 'Session', 'Token', 'User'];
const expectedOperations = ['changePassword', 'currentUser', 'deleteSession', 'health', 'jwks', 'listSessions',
  'login', 'logout', 'refreshToken', 'register'];
const ugly = /Inline|Response\d|Request\d|_\d|\d+$|^Schema|Anonymous|Object\d*$/;

const rootTypes = [...source.matchAll(/^export type (\w+) = components\['schemas'\]\['(\w+)'\];$/gm)];
const names = rootTypes.map((m) => m[1]).sort();
const missingSchemas = expectedSchemas.filter((n) => !names.includes(n));
const uglySchemas = rootTypes.filter((m) => m[1] !== m[2] || ugly.test(m[1])).map((m) => `${m[1]}=${m[2]}`);
const extraSchemas = names.filter((n) => !expectedSchemas.includes(n));
if (extraSchemas.length) console.log(`#   schemas not listed in check-names.mjs (clean, so accepted): ${extraSchemas.join(', ')}`);
check('type-names', missingSchemas.length === 0 && uglySchemas.length === 0,
  `missing: ${JSON.stringify(missingSchemas)}, not clean: ${JSON.stringify(uglySchemas)}; generated: ${JSON.stringify(names)}`);

const opsBlock = source.slice(source.indexOf('export interface operations {'));
const operations = [...opsBlock.matchAll(/^ {4}(\w+): \{$/gm)].map((m) => m[1]).sort();
const missingOperations = expectedOperations.filter((n) => !operations.includes(n));
const uglyOperations = operations.filter((n) => ugly.test(n) || /^(get|post|put|delete)_/.test(n));
const extraOperations = operations.filter((n) => !expectedOperations.includes(n));
if (extraOperations.length) console.log(`#   operations not listed in check-names.mjs: ${extraOperations.join(', ')}`);
check('operation-names', missingOperations.length === 0 && uglyOperations.length === 0,
  `missing: ${JSON.stringify(missingOperations)}, not operationIds: ${JSON.stringify(uglyOperations)}; generated: ${JSON.stringify(operations)}`);

// No inline (anonymous) object schema in any response: every JSON body is a $ref
// to a named schema, so a client gets a named type for it.
const inline = [...source.matchAll(/"application\/json[^"]*": \{$/gm)];
check('no-inline-bodies', inline.length === 0,
  `${inline.length} request/response bodies are inline object types instead of named schemas`);

process.exit(failures ? 1 : 0);
