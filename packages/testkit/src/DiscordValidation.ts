export interface DiscordError {
  code: number
  message: string
  errors?: Record<string, unknown>
}

interface FieldError {
  path: Array<string | number>
  code: string
  message: string
}

const codePoints = (s: string) => [...s.trim()].length

const isObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const errorTree = (errors: FieldError[]): Record<string, unknown> => {
  const root: Record<string, unknown> = {}
  for (const error of errors) {
    let node = root
    for (const key of error.path) {
      const next = node[String(key)]
      node = isObject(next) ? next : (node[String(key)] = {})
    }
    const list = Array.isArray(node._errors)
      ? node._errors
      : (node._errors = [])
    list.push({ code: error.code, message: error.message })
  }
  return root
}

const formError = (errors: FieldError[]): DiscordError => ({
  code: 50035,
  message: "Invalid Form Body",
  errors: errorTree(errors),
})

/**
 * Checks a parsed Execute Webhook body the way Discord does and returns the
 * 400 body it would answer with, or undefined when Discord would accept it.
 * Also insists on `allowed_mentions: { parse: [] }`, which Discord does not
 * require but our service must always send.
 */
export const validateWebhookBody = (
  body: unknown,
): DiscordError | undefined => {
  if (!isObject(body)) {
    return formError([
      {
        path: [],
        code: "DICT_TYPE_CONVERT",
        message: "Only dictionaries may be used in a DictType",
      },
    ])
  }
  const mentions = body.allowed_mentions
  if (
    !isObject(mentions) ||
    !Array.isArray(mentions.parse) ||
    mentions.parse.length !== 0
  ) {
    return {
      code: 50035,
      message: "allowed_mentions must be {parse: []}",
      errors: errorTree([
        {
          path: ["allowed_mentions"],
          code: "FAKE_ALLOWED_MENTIONS_REQUIRED",
          message: "allowed_mentions must be {parse: []}",
        },
      ]),
    }
  }

  const errors: FieldError[] = []
  const text = (
    value: unknown,
    path: Array<string | number>,
    max: number,
    required = false,
  ): number => {
    if (value === undefined || value === null) {
      if (required) {
        errors.push({
          path,
          code: "BASE_TYPE_REQUIRED",
          message: "This field is required",
        })
      }
      return 0
    }
    if (typeof value !== "string") {
      errors.push({
        path,
        code: "BASE_TYPE_STRING",
        message: "Could not interpret value as string.",
      })
      return 0
    }
    const length = codePoints(value)
    if (required && length === 0) {
      errors.push({
        path,
        code: "BASE_TYPE_REQUIRED",
        message: "This field is required",
      })
    } else if (length > max) {
      errors.push({
        path,
        code: "BASE_TYPE_MAX_LENGTH",
        message: `Must be ${max} or fewer in length.`,
      })
    }
    return length
  }
  const tooMany = (path: Array<string | number>, max: number) =>
    errors.push({
      path,
      code: "BASE_TYPE_MAX_LENGTH",
      message: `Must be ${max} or fewer in length.`,
    })

  const contentLength = text(body.content, ["content"], 2000)

  if (body.username !== undefined && body.username !== null) {
    const username = body.username
    if (typeof username !== "string") {
      text(username, ["username"], 80)
    } else {
      const length = codePoints(username)
      const lower = username.toLowerCase()
      const banned = ["discord", "clyde"].find((w) => lower.includes(w))
      if (length < 1 || length > 80) {
        errors.push({
          path: ["username"],
          code: "BASE_TYPE_BAD_LENGTH",
          message: "Must be between 1 and 80 in length.",
        })
      } else if (banned !== undefined) {
        errors.push({
          path: ["username"],
          code: "USERNAME_INVALID_CONTAINS",
          message: `Username cannot contain "${banned}"`,
        })
      } else if (["everyone", "here"].includes(lower.trim())) {
        errors.push({
          path: ["username"],
          code: "USERNAME_INVALID",
          message: "Username is invalid",
        })
      }
    }
  }

  let embedCount = 0
  let totalEmbedText = 0
  if (body.embeds !== undefined && body.embeds !== null) {
    if (!Array.isArray(body.embeds)) {
      errors.push({
        path: ["embeds"],
        code: "BASE_TYPE_ARRAY",
        message: "Must be an array.",
      })
    } else {
      embedCount = body.embeds.length
      if (embedCount > 10) tooMany(["embeds"], 10)
      body.embeds.forEach((embed: unknown, i) => {
        const at = ["embeds", i]
        if (!isObject(embed)) {
          errors.push({
            path: at,
            code: "DICT_TYPE_CONVERT",
            message: "Only dictionaries may be used in a DictType",
          })
          return
        }
        totalEmbedText += text(embed.title, [...at, "title"], 256)
        totalEmbedText += text(embed.description, [...at, "description"], 4096)
        if (isObject(embed.footer)) {
          totalEmbedText += text(
            embed.footer.text,
            [...at, "footer", "text"],
            2048,
            true,
          )
        }
        if (isObject(embed.author)) {
          totalEmbedText += text(
            embed.author.name,
            [...at, "author", "name"],
            256,
            true,
          )
        }
        if (embed.fields === undefined || embed.fields === null) return
        if (!Array.isArray(embed.fields)) {
          errors.push({
            path: [...at, "fields"],
            code: "BASE_TYPE_ARRAY",
            message: "Must be an array.",
          })
          return
        }
        if (embed.fields.length > 25) tooMany([...at, "fields"], 25)
        embed.fields.forEach((field: unknown, j) => {
          const fieldAt = [...at, "fields", j]
          if (!isObject(field)) {
            errors.push({
              path: fieldAt,
              code: "DICT_TYPE_CONVERT",
              message: "Only dictionaries may be used in a DictType",
            })
            return
          }
          totalEmbedText += text(field.name, [...fieldAt, "name"], 256, true)
          totalEmbedText += text(field.value, [...fieldAt, "value"], 1024, true)
        })
      })
    }
  }
  if (totalEmbedText > 6000) {
    errors.push({
      path: ["embeds"],
      code: "MAX_EMBED_SIZE_EXCEEDED",
      message: "Embed size exceeds maximum size of 6000",
    })
  }
  if (errors.length > 0) return formError(errors)
  if (contentLength === 0 && embedCount === 0) {
    return { code: 50006, message: "Cannot send an empty message" }
  }
  return undefined
}
