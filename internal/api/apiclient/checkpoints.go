package apiclient

import (
	"context"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func checkpointPath(name string) string { return devPath(name, "checkpoint") }

func (c *Client) CheckpointGet(ctx context.Context, name string) (wire.Durability, error) {
	return get[wire.Durability](ctx, c, checkpointPath(name), nil)
}

func (c *Client) CheckpointEnable(ctx context.Context, name string, req wire.CheckpointEnable) (wire.Durability, error) {
	return post[wire.Durability](ctx, c, "PUT", checkpointPath(name), req)
}

func (c *Client) CheckpointNow(ctx context.Context, name string) (wire.Durability, error) {
	return post[wire.Durability](ctx, c, "POST", checkpointPath(name), struct{}{})
}

func (c *Client) CheckpointDisable(ctx context.Context, name string) error {
	_, err := c.do(ctx, "DELETE", checkpointPath(name), nil, nil, nil)
	return err
}
