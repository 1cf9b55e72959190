import { Either, Redacted } from "effect"

/** One Fly organization to watch, and the token that reads it. */
export interface FlyOrgSettings {
  readonly slug: string
  readonly token: Redacted.Redacted<string>
}

const EXAMPLE = '{"acme": "FlyV1 fm2_…", "personal": "fo1_…"}'

// Fly slugs are lowercase letters, digits and hyphens (`personal`,
// `acme-corp`); a key that is anything else is likely a token pasted on
// the wrong side of the colon, so errors never quote it.
const SLUG = /^[a-z0-9][a-z0-9_-]*$/

/** A token with a line break or control character cannot be a header. */
export const hasControlCharacter = (token: string): boolean =>
  /[\u0000-\u001f\u007f]/.test(token.trim())

export const CONTROL_CHARACTER =
  "contains a line break or control character (value not shown: it is a secret)"

/**
 * Reads `FLY_ORGS`: a JSON object from org slug to token, in the order
 * given. Errors name an org by its position and never quote the value:
 * it holds tokens.
 */
export const parseFlyOrgs = (
  text: string,
): Either.Either<ReadonlyArray<FlyOrgSettings>, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    // The parser's own message quotes the text: not shown.
    return Either.left(
      `not valid JSON (value not shown: it holds tokens); expected an object from org slug to token, such as ${EXAMPLE}`,
    )
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    return Either.left(
      `expected a JSON object from org slug to token, such as ${EXAMPLE} (value not shown: it holds tokens)`,
    )
  const entries = Object.entries(json)
  if (entries.length === 0)
    return Either.left(`expected at least one org, such as ${EXAMPLE}`)
  const orgs: Array<FlyOrgSettings> = []
  for (const [index, [key, token]] of entries.entries()) {
    const at = `org ${index + 1}`
    const slug = key.trim()
    if (!SLUG.test(slug))
      return Either.left(
        `${at}: the key must be an org slug as \`fly orgs list\` shows it (lowercase letters, digits and hyphens), the value its token (not shown: it is a secret)`,
      )
    if (orgs.some((org) => org.slug === slug))
      return Either.left(`${at}: the same org is listed twice`)
    if (typeof token !== "string")
      return Either.left(
        `${at}: the token must be a JSON string (value not shown: it is a secret)`,
      )
    if (token.trim() === "") return Either.left(`${at}: the token is empty`)
    if (hasControlCharacter(token))
      return Either.left(`${at}: the token ${CONTROL_CHARACTER}`)
    orgs.push({ slug, token: Redacted.make(token) })
  }
  return Either.right(orgs)
}
