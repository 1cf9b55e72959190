import { assert, describe, it } from "@effect/vitest"
import { flyAuthorization } from "../src/FlyEvents.ts"

describe("flyAuthorization", () => {
  it("sends macaroon tokens with the FlyV1 scheme, all pieces kept", () => {
    assert.strictEqual(
      flyAuthorization("FlyV1 fm2_abc,fm2_def"),
      "FlyV1 fm2_abc,fm2_def",
    )
    assert.strictEqual(flyAuthorization("fm2_abc"), "FlyV1 fm2_abc")
    assert.strictEqual(flyAuthorization("fm1r_old"), "FlyV1 fm1r_old")
    assert.strictEqual(flyAuthorization("fm1a_old"), "FlyV1 fm1a_old")
  })

  it("drops non-macaroon pieces when macaroons are present", () => {
    assert.strictEqual(
      flyAuthorization("FlyV1 fm2_abc,fo1_user"),
      "FlyV1 fm2_abc",
    )
  })

  it("strips a pasted scheme, repeatedly and in any case", () => {
    assert.strictEqual(
      flyAuthorization("  Bearer FlyV1 fm2_abc \n"),
      "FlyV1 fm2_abc",
    )
    assert.strictEqual(flyAuthorization("bearer fo1_user"), "Bearer fo1_user")
  })

  it("sends user and legacy tokens as Bearer", () => {
    assert.strictEqual(flyAuthorization("fo1_user"), "Bearer fo1_user")
    assert.strictEqual(flyAuthorization("legacy123"), "Bearer legacy123")
  })
})
