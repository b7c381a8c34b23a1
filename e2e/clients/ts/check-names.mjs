// Checks the names openapi-typescript generated from openapi/openapi.yaml:
// the schema types must be the document's own clean names (User, Token, Error,
// RegisterRequest, LoginRequest, Health), not InlineResponse200-style or
// numbered ones, and the operations must be named by their operationIds.
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

const expectedSchemas = ['Error', 'Health', 'LoginRequest', 'RegisterRequest', 'Token', 'User'];
const expectedOperations = ['currentUser', 'health', 'login', 'logout', 'register'];
const ugly = /Inline|Response\d|Request\d|_\d|\d+$|^Schema|Anonymous|Object\d*$/;

const rootTypes = [...source.matchAll(/^export type (\w+) = components\['schemas'\]\['(\w+)'\];$/gm)];
const names = rootTypes.map((m) => m[1]).sort();
check('type-names',
  JSON.stringify(names) === JSON.stringify(expectedSchemas) && rootTypes.every((m) => m[1] === m[2]) && !names.some((n) => ugly.test(n)),
  `root types generated: ${JSON.stringify(rootTypes.map((m) => `${m[1]}=${m[2]}`))}, expected ${JSON.stringify(expectedSchemas)}`);

const opsBlock = source.slice(source.indexOf('export interface operations {'));
const operations = [...opsBlock.matchAll(/^ {4}(\w+): \{$/gm)].map((m) => m[1]).sort();
check('operation-names',
  JSON.stringify(operations) === JSON.stringify(expectedOperations),
  `operations generated: ${JSON.stringify(operations)}, expected ${JSON.stringify(expectedOperations)}`);

// No inline (anonymous) object schema in any response: every JSON body is a $ref
// to a named schema, so a client gets a named type for it.
const inline = [...source.matchAll(/"application\/json[^"]*": \{$/gm)];
check('no-inline-bodies', inline.length === 0,
  `${inline.length} request/response bodies are inline object types instead of named schemas`);

process.exit(failures ? 1 : 0);
