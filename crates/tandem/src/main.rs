//! `tandem`: the multi-call binary (check, schema; later proxy, vrrp, sync, supervisor).

fn main() -> anyhow::Result<()> {
    Ok(())
}
