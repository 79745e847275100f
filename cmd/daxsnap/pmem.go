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
	var uid, gid uint32
	var mode string
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE [--dir DIR] [--hugetlb] [-U UID] [-G GID] [-M MODE]",
		Short: "Create and reserve a memory region; tables name it by the path it prints",
		Long: `Create and reserve a memory region; tables name it by the path it prints.

--uid, --gid and --mode say which users may map devices on the region.
A DAX map hands the client a descriptor of the whole region file, which
reaches every device on the region (and its size), so a user other than
root needs, besides the device's permission (create --uid --gid --mode),
the same permission to the region: read for a read-only map, read and
write for a writable one. Give each user that maps devices a region of
their own. The defaults are uid 0, gid 6 (disk), mode 0600: only root
maps devices on the region.`,
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if size == "" {
				return fmt.Errorf("pmem create %s: --size is required, e.g. --size 64M", args[0])
			}
			n, err := parseSize(size)
			if err != nil {
				return fmt.Errorf("pmem create %s: %w", args[0], err)
			}
			req := wire.PmemCreate{Name: args[0], Size: n, Dir: dir, Hugetlb: hugetlb, Mode: mode}
			if req.UID, req.GID, err = ownerFlags(cmd, "pmem create "+args[0], uid, gid, mode); err != nil {
				return err
			}
			p, err := a.api().PmemCreate(cmd.Context(), req)
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
	cmd.Flags().Uint32VarP(&uid, "uid", "U", 0, "owner `UID` of the region, for DAX map permission (default 0)")
	cmd.Flags().Uint32VarP(&gid, "gid", "G", 0, "group `GID` of the region (default 6, disk)")
	cmd.Flags().StringVarP(&mode, "mode", "M", "", "permission bits of the region, octal `MODE` (default 0600)")
	return cmd
}

func (a *app) pmemListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List memory regions, their paths and the devices using them",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			regions, err := a.api().PmemList(cmd.Context())
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
			return a.api().PmemRemove(cmd.Context(), args[0])
		},
	}
}
