package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ddpm/config"
	"ddpm/dataset"
	"ddpm/internal/viz"
)

// Exit statuses of `ddpm dataset`: 1 for data that cannot be read (bad, missing or malformed
// input), 2 for a command line that cannot be run.
const (
	exitBadData = 1
	exitUsage   = 2
)

// maxShardMB bounds --shard-mb (64 GiB; a shard is one memory-mapped file).
const maxShardMB = 1 << 16

var datasetCmd = &cobra.Command{
	Use:   "dataset",
	Short: "Inspect and prepare training data (MNIST, Fashion-MNIST, CIFAR-10, LSUN, image folders)",
}

type datasetFlags struct {
	resolution int
	split      string
	skipBad    bool
	channels   int
}

func (f *datasetFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.resolution, "resolution", 0, "output height and width (0: the format's default)")
	cmd.Flags().StringVar(&f.split, "split", "", "train or test, for formats with splits (default train)")
	cmd.Flags().BoolVar(&f.skipBad, "skip-bad", false, "skip undecodable LMDB values and images (counted and reported)")
	cmd.Flags().IntVar(&f.channels, "channels", 0, "read a folder of greyscale images as a model of this many channels does: 1 (the default) or 3 (the grey level in each of three planes); other data keeps its own channels")
}

// maxResolution bounds --resolution: the paper's largest images are 256x256, and every image
// of a source is decoded (and hashed) at this size.
const maxResolution = 1024

// options checks the flags against the dataset spec they apply to and returns the dataset
// package's options; the error, one line naming the flag, has exit status 2.
func (f *datasetFlags) options(spec string) (dataset.Options, error) {
	if f.resolution < 0 || f.resolution > maxResolution {
		return dataset.Options{}, withExit(exitUsage, fmt.Errorf("--resolution %d: want 1..%d (or 0, the format's default)", f.resolution, maxResolution))
	}
	if f.channels != 0 && f.channels != 1 && f.channels != 3 {
		return dataset.Options{}, withExit(exitUsage, fmt.Errorf("--channels %d: want 1 or 3 (or 0, the data's own)", f.channels))
	}
	if f.split != "" && f.split != "train" && f.split != "test" {
		return dataset.Options{}, withExit(exitUsage, fmt.Errorf("--split %s: want train or test", f.split))
	}
	if sfx := specSplit(spec); sfx != "" && f.split != "" && f.split != sfx {
		return dataset.Options{}, withExit(exitUsage, fmt.Errorf("--split %s conflicts with the split in %s", f.split, spec))
	}
	return dataset.Options{Resolution: f.resolution, Split: f.split, SkipBad: f.skipBad, Channels: f.channels}, nil
}

// specSplit is the split a dataset spec names with a ":train" or ":test" suffix ("" for none),
// as dataset.Open reads it.
func specSplit(spec string) string {
	for _, s := range []string{"train", "test"} {
		if strings.HasSuffix(spec, ":"+s) {
			return s
		}
	}
	return ""
}

// specPath is spec without its ":train" or ":test" suffix: a built-in source's name or a path.
func specPath(spec string) string {
	if s := specSplit(spec); s != "" {
		return strings.TrimSuffix(spec, ":"+s)
	}
	return spec
}

// builtinDataset reports whether path (a specPath) names a source the binary ships, not a file.
func builtinDataset(path string) bool { return path == "mnist" || path == "fashion-mnist" }

// datasetInput is the file or folder a dataset spec reads, as an input an output may not
// overwrite (nothing for the built-in sources).
func datasetInput(spec string) inputFile {
	path := specPath(spec)
	if builtinDataset(path) {
		return inputFile{}
	}
	return inputFile{"the dataset", path}
}

// datasetArg is the Args check of dataset inspect and prepare, which take one data spec. With
// none it says what goes there, and names a flag that took a built-in dataset's name for its
// value (dataset inspect --preview mnist: the grid's file was left out); it was cobra's "accepts 1
// arg(s), received 0". The caller's usage wrapper adds the command's name and usage line.
//
//	the data is required: a preset's name (mnist, fashion-mnist) or the path of a dataset
//	the data is required; --preview took mnist for its value (give --preview FILE.png after the data)
func datasetArg(cmd *cobra.Command, args []string) error {
	if len(args) == 1 {
		return nil
	}
	if len(args) > 1 {
		return fmt.Errorf("one data spec, got %d: %s", len(args), strings.Join(args, " "))
	}
	var took string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if v := f.Value.String(); took == "" && f.Value.Type() == "string" && builtinDataset(specPath(v)) {
			took = fmt.Sprintf("; --%s took %s for its value (give --%s its own value after the data)", f.Name, v, f.Name)
		}
	})
	return fmt.Errorf("the data is required: a preset's name (mnist, fashion-mnist) or the path of a dataset%s", took)
}

// openSpec opens spec with opts and sorts its failure into exit status 2 (a spec or option the
// dataset package cannot honour, or data this user may not read: os.ErrPermission, as for a
// checkpoint file) or 1 (data that cannot be read: damaged, undecodable).
//
// A run preset's name whose data does not ship with the binary (cifar10, lsun-church, ...),
// where no such file is, gets what to give instead, as ddpm local's --data does (it was "no such
// file or directory (and not one of mnist, fashion-mnist)", though the name is a preset's):
//
//	dataset not found: cifar10 is a run preset whose data does not ship with ddpm (only fashion-mnist and mnist do): give the path of its data (a CIFAR-10 folder or cifar-10-binary.tar.gz)
func openSpec(spec string, opts dataset.Options) (dataset.Dataset, error) {
	ds, err := dataset.Open(spec, opts)
	if what, ok := presetData[specPath(spec)]; ok && errors.Is(err, dataset.ErrNotFound) {
		if _, serr := os.Stat(specPath(spec)); errors.Is(serr, os.ErrNotExist) {
			var builtin []string
			for _, p := range config.Presets() {
				if r, perr := config.Preset(p); perr == nil && r.Dataset != "" {
					builtin = append(builtin, p)
				}
			}
			err = fmt.Errorf("%w: %s is a run preset whose data does not ship with ddpm (only %s do): give the path of its data (%s)",
				dataset.ErrNotFound, specPath(spec), strings.Join(builtin, " and "), what)
		}
	}
	switch {
	case errors.Is(err, dataset.ErrNotFound) || errors.Is(err, dataset.ErrOption) || errors.Is(err, dataset.ErrUnknownFormat),
		errors.Is(err, os.ErrPermission):
		return nil, withExit(exitUsage, err)
	case err != nil:
		return nil, withExit(exitBadData, err)
	}
	return ds, nil
}

// openDatasetArg is openSpec for dataset inspect and prepare, which take --skip-bad: an image
// that does not decode, one bad file among many perhaps, ends its line with that way past it.
func openDatasetArg(spec string, opts dataset.Options) (dataset.Dataset, error) {
	ds, err := openSpec(spec, opts)
	if errors.Is(err, dataset.ErrDecode) && !opts.SkipBad {
		return nil, withExit(exitBadData, fmt.Errorf("%w (--skip-bad leaves undecodable images out, counted and named)", err))
	}
	return ds, err
}

func init() {
	var df datasetFlags
	var preview string
	var force bool
	inspect := &cobra.Command{
		Use:   "inspect PATH",
		Short: "Print format, split, count, shape, label histogram and sha256 fingerprint; optionally a preview grid",
		Long: `PATH is mnist, fashion-mnist (":test" for the test split), a CIFAR-10 folder or
cifar-10-binary.tar.gz, an LSUN LMDB directory, a folder of images, a prepared directory, a folder
of idx files or an idx images file. A folder of images and an LSUN LMDB have no splits: --split
test on one is refused. A folder's images have 1 channel when every file is stored as greyscale
(PNG grey or grey+alpha, an all-grey palette, a one-component JPEG; a WebP, which has no grey
mode, a colour-mode JPEG or an RGB/RGBA PNG when R = G = B at every pixel that is not fully
transparent, as cwebp, JPEG encoders and many editors store a grey image), otherwise 3 (RGB); a run of
a 3-channel model (cifar10, small, ...) reads a greyscale folder as 3 channels, the grey level in
each, as --channels 3 shows it (versions before 1-channel grey folders read every folder so).
The fingerprint is the sha256 of the decoded content at the chosen resolution and channels; the
run config records it and trainers refuse data whose fingerprint differs.`,
		Args: datasetArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := df.options(args[0])
			if err != nil {
				return err
			}
			// What no --force lets through first, then the name, then an existing file (see ddpm loss).
			if err := checkOutputs(true, []outFile{{"--preview", preview}}, datasetInput(args[0])); err != nil {
				return err
			}
			if err := checkPNGNames(outFile{"--preview", preview}); err != nil {
				return err
			}
			if err := checkOutputs(force, []outFile{{"--preview", preview}}, datasetInput(args[0])); err != nil {
				return err
			}
			ds, err := openDatasetArg(args[0], opts)
			if err != nil {
				return err
			}
			// Raw sources were just decoded in full (or are held in memory); prepared shards are
			// mapped unread, so inspect checks their sha256 and content hash here.
			if dataset.Describe(ds).Format == "prepared" {
				if err := dataset.Verify(ds); err != nil {
					return withExit(exitBadData, err)
				}
			}
			if dataset.Describe(ds).Format == "image-folder" {
				if err := checkOutsideImageFolder("--preview", preview, specPath(args[0]), "the grid"); err != nil {
					return withExit(exitUsage, err)
				}
			}
			printInfo(cmd.OutOrStdout(), ds)
			if preview != "" {
				if err := writePreview(ds, preview); err != nil {
					return withExit(exitBadData, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "preview      %s\n", preview)
			}
			return nil
		},
	}
	df.register(inspect)
	inspect.Flags().StringVar(&preview, "preview", "", "write a PNG grid of the first 64 images to this path")
	inspect.Flags().BoolVar(&force, "force", false, "replace --preview if it already exists")
	datasetCmd.AddCommand(inspect)

	var pf datasetFlags
	var out string
	var shardMB int
	prepare := &cobra.Command{
		Use:   "prepare SRC --out DIR [--resolution R]",
		Short: "Decode SRC once into memory-mappable shards with an index (count, shape, sha256 per shard)",
		Long: `prepare reads SRC (any PATH that inspect takes), decodes, crops and resizes every image once,
and writes DIR/index.json and DIR/shard-NNNNN.bin. Trainers read DIR like any source, without
decoding; its fingerprint equals SRC's at the same resolution and channels. A folder of greyscale
images is prepared as 1 channel, or with --channels 3 as a 3-channel model reads it: the copy keeps
those channels for every model. DIR must not exist.`,
		Args: datasetArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return withExit(exitUsage, errors.New("dataset prepare: --out DIR is required"))
			}
			if shardMB <= 0 || shardMB > maxShardMB {
				return withExit(exitUsage, fmt.Errorf("dataset prepare: --shard-mb %d: want 1..%d", shardMB, maxShardMB))
			}
			opts, err := pf.options(args[0])
			if err != nil {
				return err
			}
			// Before the source is decoded (minutes for a large folder or LMDB), not after.
			if err := dataset.CheckPrepareOut(out); errors.Is(err, dataset.ErrUnwritable) || errors.Is(err, dataset.ErrExists) {
				return withExit(exitUsage, err)
			} else if err != nil {
				return withExit(exitBadData, err)
			}
			// What prepares into --out that were killed left behind; a running one's stays.
			left, err := dataset.RemoveInterrupted(out)
			for _, p := range left.Tmps {
				fmt.Fprintf(cmd.ErrOrStderr(), "ddpm dataset prepare: removed the temp folder of an interrupted prepare: %s\n", p)
			}
			for _, p := range left.Probes {
				fmt.Fprintf(cmd.ErrOrStderr(), "ddpm dataset prepare: removed the probe folder of an interrupted prepare: %s\n", p)
			}
			for _, p := range left.Unmarked {
				fmt.Fprintf(cmd.ErrOrStderr(), "ddpm dataset prepare: left %s: the temp folder of a prepare by an older ddpm, which did not mark whether it runs; remove it if no prepare into %s runs\n", p, out)
			}
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "ddpm dataset prepare: could not remove what an interrupted prepare left: %v\n", err)
			}
			ds, err := openDatasetArg(args[0], opts)
			if err != nil {
				return err
			}
			idx, err := dataset.Prepare(ds, out, shardMB<<20)
			if errors.Is(err, dataset.ErrExists) {
				return withExit(exitUsage, err)
			} else if err != nil {
				return withExit(exitBadData, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "prepared %d images of %dx%dx%d into %d shards in %s\nfingerprint sha256:%s\n",
				idx.Count, idx.Shape[0], idx.Shape[1], idx.Shape[2], len(idx.Shards), out, idx.Fingerprint)
			if len(idx.Skipped) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "skipped %d undecodable records (listed in index.json)\n", len(idx.Skipped))
			}
			return nil
		},
	}
	pf.register(prepare)
	prepare.Flags().StringVar(&out, "out", "", "output directory (must not exist)")
	prepare.Flags().IntVar(&shardMB, "shard-mb", 256, "approximate shard size in MiB")
	datasetCmd.AddCommand(prepare)
	rootCmd.AddCommand(datasetCmd)
}

func printInfo(w io.Writer, ds dataset.Dataset) {
	info := dataset.Describe(ds)
	fmt.Fprintf(w, "format       %s\n", info.Format)
	fmt.Fprintf(w, "name         %s\n", info.Name)
	if info.Split != "" {
		fmt.Fprintf(w, "split        %s\n", info.Split)
	}
	fmt.Fprintf(w, "source       %s\n", info.Source)
	fmt.Fprintf(w, "count        %d\n", info.Count)
	fmt.Fprintf(w, "shape        %dx%dx%d (CHW)\n", info.C, info.H, info.W)
	if info.Grey {
		if info.C == 1 {
			fmt.Fprintf(w, "greyscale    every image; a 1-channel model reads 1x%dx%d, a 3-channel model 3x%dx%d, the grey level in each channel (--channels 3: its fingerprint)\n",
				info.H, info.W, info.H, info.W)
		} else {
			fmt.Fprintf(w, "greyscale    every image, the grey level in each channel, as a 3-channel model reads it (a 1-channel model: --channels 1)\n")
		}
	}
	if info.Labeled {
		hist := map[int]int{}
		maxLabel := 0
		for i := 0; i < ds.Len(); i++ {
			l := ds.Label(i)
			hist[l]++
			maxLabel = max(maxLabel, l)
		}
		var parts []string
		for l := 0; l <= maxLabel; l++ {
			parts = append(parts, fmt.Sprintf("%d:%d", l, hist[l]))
		}
		fmt.Fprintf(w, "labels       %s\n", strings.Join(parts, " "))
	} else {
		fmt.Fprintf(w, "labels       none\n")
	}
	fmt.Fprintf(w, "fingerprint  sha256:%s\n", info.Fingerprint)
	if len(info.Skipped) > 0 {
		show := info.Skipped
		if len(show) > 5 {
			show = show[:5]
		}
		fmt.Fprintf(w, "skipped      %d undecodable (--skip-bad): %s\n", len(info.Skipped), strings.Join(show, ", "))
	}
}

// writePreview writes the first (up to) 64 images as an 8-column PNG grid.
func writePreview(ds dataset.Dataset, path string) error {
	n := min(64, ds.Len())
	c, h, w := ds.Shape()
	x := make([]float32, n*c*h*w)
	for i := 0; i < n; i++ {
		if err := ds.Image(i, x[i*c*h*w:(i+1)*c*h*w]); err != nil {
			return err
		}
	}
	if c != 1 && c != 3 {
		return fmt.Errorf("preview of %d-channel images is not supported", c)
	}
	if err := viz.WritePNG(path, viz.Grid(x, n, c, h, w, 8, 2)); err != nil {
		return fmt.Errorf("preview %s: %w", path, err)
	}
	return nil
}
