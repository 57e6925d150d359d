// Package irq owns interrupt sources: a goroutine locked to its OS thread
// waits for events (io_uring completions, an eventfd) and runs its handler in
// interrupt context, where it may only record results and post preallocated
// items to the bhqueue: no allocation, no locks but the queue's, no
// callbacks.
package irq
