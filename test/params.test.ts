// Control API input the README says is refused, where a JSON body once slipped past the
// rules the query string keeps: each is a 400 naming the field, and the state stays as it was.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { post, Reply } from "./harness/http.ts";

const JSON_BODY = { "Content-Type": "application/json" };

function assertRefused(r: Reply, field: string): void {
  assert.equal(r.status, 400, r.body);
  assert.match(String(r.headers["content-type"]), /application\/json/);
  assert.equal(r.json().field, field, r.body);
}

describe("control API input: JSON bodies keep the query's rules", () => {
  let node: NginxNode;
  const pause = (body: string) => post(node.url("/_intermission/pause"), body, JSON_BODY);
  const state = async () => (await node.status()).state;

  before(async () => {
    node = await NginxNode.start();
  });
  after(async () => node?.stop());
  afterEach(async () => {
    assert.equal(await state(), "running", "a refused pause changed the state");
    await node.assertCleanLog();
  });

  it("refuses a ttl of -0 in a JSON body, as ?ttl=-0 is refused", async () => {
    assertRefused(await post(node.url("/_intermission/pause?ttl=-0"), undefined), "ttl");
    assertRefused(await pause('{"ttl": -0}'), "ttl");
    assertRefused(await pause('{"ttl": -0.0}'), "ttl");
    assertRefused(await pause('{"drain": -0}'), "drain");
  });

  it("refuses hexadecimal numbers, Infinity and NaN in a JSON body", async () => {
    for (const body of ['{"ttl": 0x10}', '{"ttl": 0X1f}', '{"drain": 0x1}', '{"ttl": Infinity}', '{"ttl": NaN}', '{"ttl": -inf}']) {
      const r = await pause(body);
      assert.equal(r.status, 400, `${body}: ${r.body}`);
      assert.match(r.json().error, /malformed JSON body/);
    }
  });

  it("refuses a JSON body that repeats a key, however it is spelt", async () => {
    assertRefused(await pause('{"ttl": 30, "ttl": 0}'), "ttl");
    assertRefused(await pause('{"reason": "a", "ttl": 5, "reason": "b"}'), "reason");
    assertRefused(await pause('{"ttl": 30, "t\\u0074l": 0}'), "ttl");
    // Not repeats: the same text inside a value, and a name used once.
    const ok = await pause('{"reason": "ttl, \\"ttl\\": {\\"ttl\\"", "ttl": 30}');
    assert.equal(ok.status, 200, ok.body);
    assert.equal(ok.json().reason, 'ttl, "ttl": {"ttl"');
    assert.equal((await post(node.url("/_intermission/resume"), undefined)).status, 200);
  });

  it("refuses a ttl between 0 and a millisecond, and takes 0 and 0.001", async () => {
    for (const ttl of ["0.0005", "0.0009"]) {
      assertRefused(await post(node.url(`/_intermission/pause?ttl=${ttl}`), undefined), "ttl");
      assertRefused(await pause(`{"ttl": ${ttl}}`), "ttl");
    }
    for (const ttl of ["0", "0.001"]) {
      const r = await post(node.url(`/_intermission/pause?ttl=${ttl}`), undefined);
      assert.equal(r.status, 200, r.body);
      assert.equal((await post(node.url("/_intermission/resume"), undefined)).status, 200);
    }
  });
});
