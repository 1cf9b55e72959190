import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"

export interface LocalServer {
  readonly url: string
  /** Runs `fn` after `ms`, unless the server stops first. */
  later(ms: number, fn: () => void): void
  close(): Promise<void>
}

/**
 * An HTTP server on 127.0.0.1 with a random port. `close` destroys every open
 * socket, so hanging requests and keep-alive connections never hold a test
 * open.
 */
export const listenLocal = async (
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<LocalServer> => {
  const sockets = new Set<Socket>()
  const timers = new Set<ReturnType<typeof setTimeout>>()
  const server = http.createServer(handler)
  server.on("connection", (socket: Socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  let closed = false
  return {
    url: `http://127.0.0.1:${port}`,
    later(ms, fn) {
      if (closed) return
      if (ms <= 0) return fn()
      const timer = setTimeout(() => {
        timers.delete(timer)
        fn()
      }, ms)
      timers.add(timer)
    },
    async close() {
      if (closed) return
      closed = true
      for (const timer of timers) clearTimeout(timer)
      timers.clear()
      for (const socket of sockets) socket.destroy()
      server.closeAllConnections?.()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

export const readBody = (req: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

export const parseBoolean = (value: string | null): boolean =>
  value !== null && ["1", "t", "T", "true", "TRUE", "True"].includes(value)
