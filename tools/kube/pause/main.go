// Command pause holds a Pod's namespaces open: the sandbox container of every Pod on the
// local node runs it as PID 1. It reaps orphaned children (PID 1's duty) and exits on
// SIGINT or SIGTERM, so a stopped sandbox goes at once instead of waiting to be killed.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
