use std::process::ExitCode;

use clap::Parser;
use ensemble_core::{launch::launch, telemetry};
use ensemble_dashboard::config::Command;
use ensemble_dashboard::{qr, run, Config};

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log);
    match &config.command {
        Some(Command::QrCodes { out, size }) => {
            let (out, size) = (out.clone(), *size);
            launch(
                "ensemble-dashboard qr-codes",
                config.validate_qr(),
                move |(campaigns, collector), _| async move {
                    let drawing = qr::Drawing {
                        size_px: size,
                        margin: 4,
                    };
                    // The main campaign's in `--out`, every other one's in
                    // `--out/<campaign id>/`.
                    for (i, campaign) in campaigns.iter().enumerate() {
                        let dir = if i == 0 {
                            out.clone()
                        } else {
                            out.join(&campaign.id)
                        };
                        let files = qr::write_all(campaign, &collector, drawing, &dir)?;
                        for f in &files {
                            println!("{}", f.display());
                        }
                        eprintln!(
                            "{}: {} QR codes of {} placements and their sheets in {} (they open {}r/<code>)",
                            campaign.id,
                            files.len(),
                            campaign.placements.len(),
                            dir.display(),
                            collector
                        );
                    }
                    Ok::<(), anyhow::Error>(())
                },
            )
        }
        None => launch("ensemble-dashboard", config.validate(), run),
    }
}
