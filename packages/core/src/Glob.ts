/** `*` matches any run of characters, `?` one; everything else is literal. */
export const globToRegExp = (glob: string): RegExp =>
  new RegExp(
    "^" +
      glob
        .split("")
        .map((char) =>
          char === "*"
            ? ".*"
            : char === "?"
              ? "."
              : char.replace(/[.+^${}()|[\]\\]/g, "\\$&"),
        )
        .join("") +
      "$",
  )
