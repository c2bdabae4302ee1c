// Command claudeflare shares several Claude accounts behind one local
// endpoint. See README.md and claudeflare(1).
package main

import (
	"os"

	"github.com/claudeflare/claudeflare/commands"
)

func main() {
	os.Exit(commands.Run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
