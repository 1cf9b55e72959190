import { randomInt } from "node:crypto"

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

/** A 26-char ULID whose first 10 chars encode `ms`, like Fly event ids. */
export const ulid = (ms: number): string => {
  let time = ""
  let rest = Math.floor(ms)
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD.charAt(rest % 32) + time
    rest = Math.floor(rest / 32)
  }
  let random = ""
  for (let i = 0; i < 16; i++) random += CROCKFORD.charAt(randomInt(32))
  return time + random
}

export const ulidTime = (id: string): number =>
  [...id.slice(0, 10).toUpperCase()].reduce(
    (acc, char) => acc * 32 + CROCKFORD.indexOf(char),
    0,
  )
