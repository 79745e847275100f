package main

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

func (a *app) pmemCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pmem",
		Short: "Memory regions (files on tmpfs or hugetlbfs) to build DAX volumes on",
	}
	cmd.AddCommand(a.pmemCreateCmd(), a.pmemListCmd(), a.pmemRemoveCmd())
	return cmd
}

func (a *app) pmemCreateCmd() *cobra.Command {
	var size, dir string
	var hugetlb bool
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE [--dir DIR] [--hugetlb]",
		Short: "Create and reserve a memory region; tables name it by the path it prints",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if size == "" {
				return fmt.Errorf("pmem create %s: --size is required, e.g. --size 64M", args[0])
			}
			n, err := parseSize(size)
			if err != nil {
				return fmt.Errorf("pmem create %s: %w", args[0], err)
			}
			p, err := a.api().PmemCreate(wire.PmemCreate{Name: args[0], Size: n, Dir: dir, Hugetlb: hugetlb})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "%s: %s on %s at %s\n", p.Name, formatSize(p.Size), p.Filesystem, p.Path)
			return nil
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "size, e.g. 64M or 4G (powers of 1024)")
	cmd.Flags().StringVar(&dir, "dir", "", "tmpfs or hugetlbfs directory (default /dev/shm, or /dev/hugepages with --hugetlb)")
	cmd.Flags().BoolVar(&hugetlb, "hugetlb", false, "use huge pages (needs a hugetlbfs mount and reserved pages)")
	return cmd
}

func (a *app) pmemListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List memory regions, their paths and the devices using them",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			regions, err := a.api().PmemList()
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(regions)
			}
			formatPmem(a.out, regions)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) pmemRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Delete a memory region no table uses",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().PmemRemove(args[0])
		},
	}
}
