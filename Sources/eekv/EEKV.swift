import ArgumentParser
import EEKV
import Glibc

@main
struct EEKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eekv",
        abstract: "eekv: a sharded key-value store on eeRPC, an encrypted eRPC-class datacenter RPC runtime.",
        subcommands: [Server.self, Put.self, Get.self, Del.self, Scan.self, MGet.self, Merge.self, Fields.self, YCSBCommand.self, Certs.self, Bench.self]
    )

    /// Usage errors exit with 2 (ArgumentParser's default is 64), as the client commands document;
    /// a command line that does not parse also gets the usage. A command that fails once running
    /// says why on one line: exit 2 for what the user can fix in the command or the config, 3
    /// for the rest (a port in use, a store that cannot open, a peer that refuses).
    static func main() {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            if exitCode(for: error) == .validationFailure {
                say(fullMessage(for: error))
                Glibc.exit(ClientExit.usage)
            }
            exit(withError: error)
        }
        do {
            try command.run()
        } catch let error as ValidationError {
            say("eekv: \(error.message)")
            Glibc.exit(ClientExit.usage)
        } catch let error as ClusterConfig.Error {
            say("eekv: \(error)")
            Glibc.exit(ClientExit.usage)
        } catch StoreError.inUse(let path) {
            // Another node's --data: the command's to fix.
            say("eekv: \(StoreError.inUse(path: path))")
            Glibc.exit(ClientExit.usage)
        } catch let error as ExitCode {
            exit(withError: error)
        } catch let error as CleanExit {
            exit(withError: error)
        } catch where exitCode(for: error) != .failure {
            // ArgumentParser's own requests (`--help` becomes a help command whose run throws).
            exit(withError: error)
        } catch {
            say("eekv: \(error)")
            Glibc.exit(ClientExit.serverOrNetwork)
        }
    }

    static func say(_ line: String) { _ = (line + "\n").withCString { write(2, $0, strlen($0)) } }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that report figures as ratios against a reference measured in the same run.",
        subcommands: [BenchRPC.self, BenchAES.self, BenchAEAD.self, BenchCopy.self, BenchKV.self, BenchStore.self, BenchReport.self]
    )
}
